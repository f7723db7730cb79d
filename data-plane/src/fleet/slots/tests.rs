//! The slots' rules on paused time: the cap, the guard, the queue's order
//! and bounds, and shares that lapse to an even split.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn take(s: &Arc<Slots>, place: &mut Option<Place>) -> Permit {
    s.take("m", Some(2), "p", place)
        .expect("a free slot")
        .expect("capped")
}

fn busy(s: &Arc<Slots>, place: &mut Option<Place>) -> bool {
    s.take("m", Some(2), "p", place).is_err()
}

#[tokio::test(start_paused = true)]
async fn a_worker_alone_takes_up_to_the_cap_and_every_path_gives_a_slot_back() {
    let s = Slots::new(false, 8);
    assert!(
        matches!(s.take("free", None, "p", &mut None), Ok(None)),
        "an uncapped member needs no slot"
    );
    let a = take(&s, &mut None);
    let b = take(&s, &mut None);
    assert!(busy(&s, &mut None), "the cap holds");
    drop(a);
    let a = take(&s, &mut None);

    // Dropped with the attempt's hold (a stream's, when it ends).
    let hold = crate::signals::Hold::untracked().with_permit(Some(a));
    assert!(busy(&s, &mut None));
    drop(hold);
    let a = take(&s, &mut None);
    drop((a, b));

    // A cancelled request (the caller left mid-attempt).
    let held = {
        let s = s.clone();
        async move {
            let _p = take(&s, &mut None);
            let _q = take(&s, &mut None);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(10), held)
            .await
            .is_err()
    );
    assert_eq!(
        s.members()["m"].in_use(),
        0,
        "the cancelled request's slots came back"
    );

    // A panic, and an aborted task.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _p = take(&s, &mut None);
        panic!("boom");
    }));
    assert!(caught.is_err());
    assert_eq!(s.members()["m"].in_use(), 0, "unwinding gave the slot back");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ss = s.clone();
    let t = tokio::spawn(async move {
        let _p = take(&ss, &mut None);
        let _ = tx.send(());
        std::future::pending::<()>().await;
    });
    rx.await.expect("taken");
    assert_eq!(s.members()["m"].in_use(), 1);
    t.abort();
    assert!(t.await.expect_err("aborted").is_cancelled());
    assert_eq!(
        s.members()["m"].in_use(),
        0,
        "the aborted task's slot came back"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_get_freed_slots_first_come_first_served() {
    let s = Slots::new(false, 8);
    let a = take(&s, &mut None);
    let b = take(&s, &mut None);
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let s = s.clone();
        let done_tx = done_tx.clone();
        let mut place = Some(s.enqueue("p").expect("room"));
        assert!(busy(&s, &mut place), "nothing is free yet");
        tasks.push(tokio::spawn(async move {
            loop {
                let woken = place
                    .as_ref()
                    .expect("queued")
                    .wait(Instant::now() + Duration::from_secs(60))
                    .await;
                assert!(woken, "woken before the deadline");
                if let Ok(Some(p)) = s.take("m", Some(2), "p", &mut place) {
                    assert!(place.is_none(), "a request with a slot leaves the queue");
                    done_tx.send((i, p)).expect("send");
                    return;
                }
            }
        }));
    }
    tokio::task::yield_now().await;
    assert_eq!(s.queue_len("p"), 3);
    assert!(
        busy(&s, &mut None),
        "a newcomer does not overtake the queue"
    );
    drop(a);
    let (first, p0) = done.recv().await.expect("first served");
    assert_eq!(first, 0);
    assert!(
        busy(&s, &mut None),
        "the slot went to the queue, not to a newcomer"
    );
    drop(b);
    let (second, _p1) = done.recv().await.expect("second served");
    assert_eq!(second, 1);
    drop(p0);
    let (third, _p2) = done.recv().await.expect("third served");
    assert_eq!(third, 2);
    assert_eq!(s.queue_len("p"), 0);
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_and_the_deadline_ends_a_wait() {
    let s = Slots::new(false, 2);
    let _a = take(&s, &mut None);
    let _b = take(&s, &mut None);
    let first = s.enqueue("p").expect("room");
    let second = s.enqueue("p").expect("room");
    assert!(s.enqueue("p").is_err(), "the queue holds two");
    assert!(s.enqueue("other").is_ok(), "every pool has its own queue");

    let start = Instant::now();
    assert!(
        !first.wait(start + Duration::from_millis(300)).await,
        "nothing freed: the deadline ends the wait"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    drop(first);
    assert!(second.is_head(), "the next one moves up");
    drop(second);
    assert_eq!(s.queue_len("p"), 0);
    assert!(s.enqueue("p").is_ok(), "room again");
}

#[tokio::test(start_paused = true)]
async fn a_leased_share_bounds_the_slots_and_lapses_to_an_even_split() {
    let s = Slots::new(true, 8);
    assert!(
        s.take("m", Some(4), "p", &mut None).is_err(),
        "in a fleet a member has no slots before its lease"
    );
    s.lapse(Instant::now(), false);
    assert_eq!(
        s.members()["m"].share(),
        0,
        "still waiting for the first lease"
    );
    s.set_workers(3);
    s.lapse(Instant::now(), true);
    assert_eq!(
        s.members()["m"].share(),
        1,
        "the fleet unreachable: the cap split over the workers last seen"
    );

    let slot = s.members()["m"].clone();
    s.granted(&slot, 2, Instant::now(), Duration::from_secs(3));
    let p1 = s
        .take("m", Some(4), "p", &mut None)
        .expect("one")
        .expect("capped");
    let p2 = s
        .take("m", Some(4), "p", &mut None)
        .expect("two")
        .expect("capped");
    assert!(
        s.take("m", Some(4), "p", &mut None).is_err(),
        "the share holds"
    );
    assert_eq!(
        Slots::want(&slot),
        4,
        "peak 2, one refused, one more: capped at 4"
    );

    // A smaller share: what is in use is still claimed until it ends.
    s.granted(&slot, 1, Instant::now(), Duration::from_secs(3));
    assert_eq!(Slots::claim(&slot), 2);
    drop(p1);
    assert!(
        s.take("m", Some(4), "p", &mut None).is_err(),
        "one in use, share one"
    );
    drop(p2);
    assert_eq!(Slots::claim(&slot), 1);

    tokio::time::advance(Duration::from_secs(2)).await;
    s.lapse(Instant::now(), true);
    assert_eq!(slot.share(), 1, "the lease still runs");
    s.set_workers(1);
    tokio::time::advance(Duration::from_secs(1)).await;
    s.lapse(Instant::now(), true);
    assert_eq!(slot.share(), 4, "lapsed: the cap over one live worker");
}

#[tokio::test(start_paused = true)]
async fn a_member_with_room_for_every_waiter_and_more_still_serves_newcomers() {
    let s = Slots::new(false, 8);
    // The head waits for "m" (cap 2, both slots taken).
    let held = (take(&s, &mut None), take(&s, &mut None));
    let mut head = Some(s.enqueue("p").expect("room"));
    assert!(busy(&s, &mut head));
    // "z" (cap 4, idle) has room for the one waiter and more: a newcomer
    // takes it rather than queueing behind a head that cannot use it.
    let z = s
        .take("z", Some(4), "p", &mut None)
        .expect("z has room")
        .expect("capped");
    // "one" (cap 1, idle) has no more room than there are waiters: FIFO.
    assert!(s.take("one", Some(1), "p", &mut None).is_err());
    assert!(
        s.take("one", Some(1), "p", &mut head).is_ok(),
        "the head may take it"
    );
    drop((held, z));
}
