//! openraft's async runtime for Ratify: tokio, as `openraft::TokioRuntime`, except that the
//! random numbers (election timeouts) can come from a seeded generator. Production draws from
//! the thread's entropy-seeded generator; the deterministic simulation seeds this thread's
//! generator ([`seed_thread_rng`]) so a run's elections replay exactly.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::AsyncRuntime;
use openraft::{OptionalSend, TokioRuntime};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seed this thread's Raft generator (`Some`), or go back to entropy (`None`).
pub fn seed_thread_rng(seed: Option<u64>) {
    SEEDED.with(|s| *s.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// The generator openraft draws from: the thread's seeded one if there is one, else
/// `rand::thread_rng()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftRng;

impl RngCore for RaftRng {
    fn next_u32(&mut self) -> u32 {
        SEEDED.with(|s| match s.borrow_mut().as_mut() {
            Some(r) => r.next_u32(),
            None => rand::thread_rng().next_u32(),
        })
    }

    fn next_u64(&mut self) -> u64 {
        SEEDED.with(|s| match s.borrow_mut().as_mut() {
            Some(r) => r.next_u64(),
            None => rand::thread_rng().next_u64(),
        })
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        SEEDED.with(|s| match s.borrow_mut().as_mut() {
            Some(r) => r.fill_bytes(dest),
            None => rand::thread_rng().fill_bytes(dest),
        })
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// tokio, with [`RaftRng`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RatifyRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for RatifyRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = RaftRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        RaftRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seeded_thread_replays_its_draws() {
        let draw = || {
            let mut r = RatifyRuntime::thread_rng();
            (0..8).map(|_| r.gen_range(150..300u64)).collect::<Vec<_>>()
        };
        seed_thread_rng(Some(7));
        let a = draw();
        seed_thread_rng(Some(7));
        let b = draw();
        seed_thread_rng(None);
        assert_eq!(a, b);
        assert!(a.iter().all(|x| (150..300).contains(x)));
    }
}
