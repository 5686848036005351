//! Seeded byte mutations for the never-panic tests: up to `max_edits - 1`
//! edits, each replacing a byte by a `specials` byte or a random one,
//! removing one, or inserting a `specials` byte. Shared by
//! `parser_robustness` and `fuzz_regressions` (`#[path]`-included, so
//! neither pulls in the whole harness).

pub fn mutate(rng: &mut fastrand::Rng, seed: &[u8], specials: &[u8], max_edits: usize) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..rng.usize(1..max_edits) {
        if m.is_empty() {
            break;
        }
        let i = rng.usize(..m.len());
        match rng.u8(..4) {
            0 => m[i] = specials[rng.usize(..specials.len())],
            1 => m[i] = rng.u8(..),
            2 => {
                m.remove(i);
            }
            _ => m.insert(i, specials[rng.usize(..specials.len())]),
        }
    }
    m
}
