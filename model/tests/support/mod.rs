//! Shared by the model-check tests.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use stateright::{Checker, Model};

/// Require `checker` to have found a counterexample to `property` (a planted bug: `label`
/// says which), and print it.
pub fn counterexample<M>(checker: &impl Checker<M>, label: &str, property: &'static str)
where
    M: Model,
    M::State: Clone + Debug + Hash + PartialEq,
    M::Action: Clone + Debug + PartialEq,
{
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("{label} must break {property:?}"));
    eprintln!(
        "{label} breaks {property:?} in {} steps:\n{path}",
        path.clone().into_actions().len()
    );
}

/// Explore `model` exhaustively (breadth first), saying how big and how long.
pub fn check<M>(model: M) -> impl Checker<M>
where
    M: Model + Debug + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync + 'static,
    M::Action: Clone + Debug + PartialEq + Send + Sync + 'static,
{
    let started = Instant::now();
    let label = format!("{model:?}");
    let checker = model.checker().spawn_bfs().join();
    eprintln!(
        "{label}: {} states explored, {} unique, in {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
    checker
}
