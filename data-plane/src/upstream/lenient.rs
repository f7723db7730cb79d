//! Lenient, borrowed JSON pieces for reading upstream answers into typed
//! structs without building a `serde_json::Value`: a field of the wrong
//! type reads as absent (as indexing a `Value` did), strings borrow from the
//! body unless they hold escapes, and unknown fields are skipped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::UpstreamError;

/// A string, or `None` for anything else (absent, null, a number, ...).
#[derive(Debug, Default)]
pub(super) struct Str<'a>(pub Option<Cow<'a, str>>);

impl<'a> Str<'a> {
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn owned(self) -> Option<String> {
        self.0.map(Cow::into_owned)
    }

    /// The string when it is not empty.
    pub fn nonempty(self) -> Option<String> {
        self.0.filter(|s| !s.is_empty()).map(Cow::into_owned)
    }
}

/// A non-negative integer (`Value::as_u64`), or `None`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Num(pub Option<u64>);

/// Any number as an f64 (`Value::as_f64`), or `None`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Float(pub Option<f64>);

/// An object read as `T`, or `None` for anything else.
#[derive(Debug)]
pub(super) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// An array of `T`, or `None` for anything else.
#[derive(Debug)]
pub(super) struct List<T>(pub Option<Vec<T>>);

impl<T> Default for List<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> List<T> {
    /// The elements; none when it was not an array.
    pub fn items(self) -> Vec<T> {
        self.0.unwrap_or_default()
    }
}

/// Reads `body` as a `T` (an object; anything else, e.g. an array, reads as
/// `T::default()`), `Protocol` when it is not JSON.
pub(super) fn read<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, UpstreamError> {
    serde_json::from_slice::<Obj<T>>(body)
        .map(|o| o.0.unwrap_or_default())
        .map_err(|e| UpstreamError::Protocol(format!("invalid JSON: {e}")))
}

/// Skips what is left of an array or object nobody asked for.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The visitor methods of a leaf that turns every JSON type but the ones it
/// takes into `$none`.
macro_rules! otherwise {
    (@one bool, $none:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok($none) }
    };
    (@one unit, $none:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok($none) }
    };
    (@one str, $none:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok($none) }
    };
    (@one numbers, $none:expr) => {
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok($none) }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok($none) }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok($none) }
    };
    ($none:expr; $($skip:ident),*) => {
        $(otherwise!(@one $skip, $none);)*
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq).map(|()| $none)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map).map(|()| $none)
        }
    };
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v))))
            }
            otherwise!(Str(None); bool, unit, numbers);
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Num(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Num(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Num(None))
            }
            otherwise!(Num(None); bool, unit, str);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Float;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Float(Some(v as f64)))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Float(Some(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Float(Some(v)))
            }
            otherwise!(Float(None); bool, unit, str);
        }
        d.deserialize_any(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|()| Obj(None))
            }
            otherwise!(@one bool, Obj(None));
            otherwise!(@one unit, Obj(None));
            otherwise!(@one str, Obj(None));
            otherwise!(@one numbers, Obj(None));
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element::<T>()? {
                    out.push(item);
                }
                Ok(List(Some(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map).map(|()| List(None))
            }
            otherwise!(@one bool, List(None));
            otherwise!(@one unit, List(None));
            otherwise!(@one str, List(None));
            otherwise!(@one numbers, List(None));
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Default, Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow)]
        s: Str<'a>,
        #[serde(default)]
        n: Num,
        #[serde(default)]
        f: Float,
        #[serde(default)]
        o: Obj<Inner>,
        #[serde(default)]
        l: List<Num>,
    }

    #[derive(Default, Deserialize)]
    struct Inner {
        #[serde(default)]
        k: Num,
    }

    #[test]
    fn a_field_of_the_wrong_type_reads_as_absent_like_value_indexing() {
        let wrong = br#"{"s": 5, "n": "7", "f": [1], "o": [{"k": 1}], "l": {"a": [1]}}"#;
        let p: Probe<'_> = read(wrong).expect("json");
        assert!(p.s.0.is_none() && p.n.0.is_none() && p.f.0.is_none());
        assert!(p.o.0.is_none() && p.l.0.is_none());
        let nulls =
            br#"{"s": null, "n": null, "f": null, "o": null, "l": null, "x": {"y": [null]}}"#;
        let p: Probe<'_> = read(nulls).expect("json");
        assert!(p.s.0.is_none() && p.n.0.is_none() && p.o.0.is_none() && p.l.0.is_none());
        // Numbers as Value::as_u64 and as_f64 read them.
        let nums = br#"{"n": -1, "f": -1, "l": [1, 1.5, -2, 300]}"#;
        let p: Probe<'_> = read(nums).expect("json");
        assert_eq!((p.n.0, p.f.0), (None, Some(-1.0)));
        let l: Vec<_> = p.l.items().into_iter().map(|n| n.0).collect();
        assert_eq!(l, [Some(1), None, None, Some(300)]);
        // Not an object at all: every field absent; not JSON: Protocol.
        let p: Probe<'_> = read(br#"{"o": {"k": 3, "z": [{}]}}"#).expect("json");
        assert_eq!(p.o.0.and_then(|o| o.k.0), Some(3));
        let p: Probe<'_> = read(b"[1, 2]").expect("json");
        assert!(p.s.0.is_none() && p.l.0.is_none());
        assert!(matches!(
            read::<Probe<'_>>(b"{\"s\": "),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn strings_borrow_unless_they_hold_escapes() {
        let p: Probe<'_> = read(br#"{"s": "plain"}"#).expect("json");
        assert!(matches!(p.s.0, Some(Cow::Borrowed("plain"))));
        let p: Probe<'_> = read(br#"{"s": "a \"quote\"\n\u00e9"}"#).expect("json");
        assert_eq!(p.s.as_str(), Some("a \"quote\"\né"));
        let p: Probe<'_> = read(br#"{"s": ""}"#).expect("json");
        assert_eq!(p.s.nonempty(), None);
    }
}
