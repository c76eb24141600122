//! Waiting on observable state: poll a condition until it holds or a deadline passes. Tests
//! and tools use this instead of sleeping for a guessed time.

use std::time::Duration;

/// How often [`until`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Poll `check` every [`POLL_INTERVAL`] until it returns `Some`, for at most `timeout`.
/// Returns the value, or `Err(what)` naming what did not happen in time.
pub async fn until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{what}: not reached within {timeout:?}"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_or_names_what_timed_out() {
        let mut n = 0;
        let got = until("three polls", Duration::from_secs(1), async || {
            n += 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(got, Ok(3));
        let never = until("never", Duration::from_millis(100), async || None::<()>).await;
        assert!(
            never
                .expect_err("times out")
                .starts_with("never: not reached")
        );
    }
}
