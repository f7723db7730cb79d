//! Redis clients for the servers: TCP_NODELAY on, so small requests (one
//! script per inference request, a publish per change) are not held back
//! by Nagle's algorithm waiting for a delayed ACK.

use redis::IntoConnectionInfo as _;

/// Opens a client for `url` (`redis://…`); the error says what is wrong with it.
pub fn open(url: &str) -> redis::RedisResult<redis::Client> {
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    redis::Client::open(info.set_tcp_settings(tcp))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bad_urls_are_refused() {
        assert!(super::open("not a url").is_err());
        assert!(super::open("redis://127.0.0.1:6379/0").is_ok());
    }
}
