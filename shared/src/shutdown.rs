//! The one shutdown signal: SIGTERM (what Kubernetes sends) or Ctrl-C.

/// Resolves when the process is asked to stop.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

/// Runs `server` (already told to stop accepting when `signalled` fires)
/// until it has drained, or until `grace` has passed since `signalled`;
/// whatever is still in flight then is dropped.
pub async fn drain_within<E>(
    server: impl std::future::Future<Output = Result<(), E>>,
    signalled: impl std::future::Future<Output = ()>,
    grace: std::time::Duration,
) -> Result<(), E> {
    tokio::select! {
        r = server => r,
        () = async { signalled.await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping calls still in flight");
            Ok(())
        }
    }
}
