//! The bank-transfer workload: which accounts a transfer touches, how much it moves.
//!
//! Two participants ("eu" and "us") hold `accounts` accounts each. A transfer debits one
//! account at one participant and credits one at the other; the direction is a coin toss, so
//! balances neither drain nor grow on average. Accounts are chosen uniformly or by a zipfian
//! law (a few hot accounts, as real workloads have).

/// The two participants every transfer spans.
pub const BRANCHES: [&str; 2] = ["eu", "us"];

/// Every account's opening balance: far more than any run moves, so no transfer is refused
/// for insufficient funds and every abort the bench counts is a conflict.
pub const OPENING_BALANCE: i64 = 1_000_000_000;

/// Largest amount one transfer moves.
pub const AMOUNT_MAX: u64 = 10;

/// The workspace's seeded generator (SplitMix64).
pub use ratify_devtools::rng::Rng;

/// How accounts are chosen.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every account equally likely.
    Uniform,
    /// Zipfian with exponent `theta` (0.99, as YCSB): account 0 is the hottest.
    Zipf,
}

/// Chooses account numbers in `[0, n)`.
#[derive(Debug, Clone)]
pub enum Picker {
    /// Uniform over `n` accounts.
    Uniform(u64),
    /// The cumulative distribution of a zipfian law over the accounts.
    Zipf(Vec<f64>),
}

impl Picker {
    /// A picker over `n` accounts.
    pub fn new(distribution: Distribution, n: u64, theta: f64) -> Self {
        match distribution {
            Distribution::Uniform => Picker::Uniform(n),
            Distribution::Zipf => {
                let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(theta)).collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                let cdf = weights
                    .iter()
                    .map(|w| {
                        acc += w / total;
                        acc
                    })
                    .collect();
                Picker::Zipf(cdf)
            }
        }
    }

    /// An account number.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        match self {
            Picker::Uniform(n) => rng.below(*n),
            Picker::Zipf(cdf) => {
                let u = rng.next_f64();
                let i = cdf.partition_point(|c| *c < u);
                i.min(cdf.len() - 1) as u64
            }
        }
    }
}

/// One transfer: `amount` from account `from_account` at participant `BRANCHES[from]` to
/// `to_account` at the other participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Index into [`BRANCHES`] of the debited participant (the credited one is the other).
    pub from: usize,
    /// Debited account number.
    pub from_account: u64,
    /// Credited account number.
    pub to_account: u64,
    /// Amount moved, 1..=[`AMOUNT_MAX`].
    pub amount: i64,
}

impl Transfer {
    /// A random transfer.
    pub fn random(picker: &Picker, rng: &mut Rng) -> Self {
        Self {
            from: (rng.next_u64() & 1) as usize,
            from_account: picker.pick(rng),
            to_account: picker.pick(rng),
            amount: 1 + rng.below(AMOUNT_MAX) as i64,
        }
    }

    /// The credited participant's index into [`BRANCHES`].
    pub fn to(&self) -> usize {
        1 - self.from
    }

    /// (participant index, account, signed change) for the "eu" side then the "us" side: the
    /// order in which lock-based systems touch them, so two transfers never wait on each other
    /// in a cycle.
    pub fn legs(&self) -> [(usize, u64, i64); 2] {
        let debit = (self.from, self.from_account, -self.amount);
        let credit = (self.to(), self.to_account, self.amount);
        if self.from == 0 {
            [debit, credit]
        } else {
            [credit, debit]
        }
    }
}

/// An account's name, the same in every system.
pub fn account_name(n: u64) -> String {
    format!("acct-{n:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_covers_every_account_and_nothing_else() {
        let p = Picker::new(Distribution::Uniform, 10, 0.99);
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[p.pick(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }

    #[test]
    fn zipf_makes_the_first_accounts_hot() {
        let p = Picker::new(Distribution::Zipf, 1000, 0.99);
        let mut rng = Rng::new(7);
        let n = 100_000;
        let hot = (0..n).filter(|_| p.pick(&mut rng) < 10).count();
        // With theta 0.99 over 1,000 accounts the 10 hottest take about 39% of the picks.
        assert!(hot > n * 30 / 100 && hot < n * 48 / 100, "{hot}");
        assert!((0..n).all(|_| p.pick(&mut rng) < 1000));
    }

    #[test]
    fn legs_put_eu_first_and_balance_out() {
        let mut rng = Rng::new(3);
        let p = Picker::new(Distribution::Uniform, 1000, 0.99);
        for _ in 0..100 {
            let t = Transfer::random(&p, &mut rng);
            let legs = t.legs();
            assert_eq!(legs[0].0, 0);
            assert_eq!(legs[1].0, 1);
            assert_eq!(legs[0].2 + legs[1].2, 0);
            assert!((1..=AMOUNT_MAX as i64).contains(&t.amount));
        }
    }
}
