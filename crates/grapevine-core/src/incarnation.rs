//! SWIM's precedence rules between claims about a member, ordered by incarnation.
//!
//! Only the member itself raises its incarnation (to refute an accusation or to
//! announce a change); everyone else compares. These functions are the whole rule
//! set, kept apart so they can be read and tested on their own.
//!
//! Incarnations are compared as serial numbers (RFC 1982): `b` is newer than `a` when it is
//! ahead by less than half the number space, so the count wraps instead of saturating. With
//! plain integers one forged `dead` at the largest incarnation (0xFFFF_FFFF) could never be
//! refuted: the member cannot go above it, and stays failed until reaped. Here a refutation
//! one above any accusation always wins. A claim exactly half the space away is neither
//! newer nor older, and is ignored.

use crate::member::State;

/// Whether incarnation `b` is newer than `a` (serial-number order, wrapping).
pub fn newer(b: u32, a: u32) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < 1 << 31
}

/// Whether `b` is `a` or newer.
pub fn at_least(b: u32, a: u32) -> bool {
    b == a || newer(b, a)
}

/// The incarnation a member refutes an accusation at `accused` with, holding `own`: one
/// above the newer of the two (wrapping).
pub fn refutation(own: u32, accused: u32) -> u32 {
    let top = if newer(accused, own) { accused } else { own };
    top.wrapping_add(1)
}

/// Whether "alive at `inc`" replaces what is held: only a strictly newer incarnation does,
/// whatever the held state (this is how a refutation beats a suspicion or a death).
pub fn alive_overrides(_held: State, held_inc: u32, inc: u32) -> bool {
    newer(inc, held_inc)
}

/// Whether "suspect at `inc`" replaces what is held: an alive member at the same or an older
/// incarnation becomes suspect; a suspect one only moves to a newer incarnation; the dead and
/// departed stay as they are.
pub fn suspect_overrides(held: State, held_inc: u32, inc: u32) -> bool {
    match held {
        State::Alive => at_least(inc, held_inc),
        State::Suspect => newer(inc, held_inc),
        State::Dead | State::Left => false,
    }
}

/// Whether "dead at `inc`" replaces what is held: alive or suspect at the same or an older
/// incarnation die; the dead and departed stay as they are.
pub fn dead_overrides(held: State, held_inc: u32, inc: u32) -> bool {
    match held {
        State::Alive | State::Suspect => at_least(inc, held_inc),
        State::Dead | State::Left => false,
    }
}

/// Whether "left at `inc`" replaces what is held: anything at the same or an older
/// incarnation, a failed member included (leaving is the more precise news).
pub fn leave_overrides(held: State, held_inc: u32, inc: u32) -> bool {
    held != State::Left && at_least(inc, held_inc)
}

/// Whether an accusation at `accused_inc` of a node at `own_inc` must be refuted
/// (it must, unless the node already moved past it).
pub fn must_refute(own_inc: u32, accused_inc: u32) -> bool {
    at_least(accused_inc, own_inc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn swim_precedence() {
        // Alive(i) overrides Suspect(j) and Alive(j) iff i > j.
        assert!(alive_overrides(Suspect, 3, 4));
        assert!(!alive_overrides(Suspect, 3, 3));
        assert!(alive_overrides(Dead, 3, 4), "a refutation revives the dead");
        // Suspect(i) overrides Alive(j) iff i >= j, Suspect(j) iff i > j.
        assert!(suspect_overrides(Alive, 3, 3));
        assert!(!suspect_overrides(Alive, 3, 2));
        assert!(!suspect_overrides(Suspect, 3, 3));
        assert!(suspect_overrides(Suspect, 3, 4));
        assert!(!suspect_overrides(Dead, 3, 9));
        // Dead(i) overrides Alive(j)/Suspect(j) iff i >= j.
        assert!(dead_overrides(Alive, 3, 3));
        assert!(dead_overrides(Suspect, 3, 3));
        assert!(!dead_overrides(Alive, 4, 3));
        assert!(!dead_overrides(Dead, 3, 4));
        assert!(leave_overrides(Dead, 3, 3));
        assert!(!leave_overrides(Left, 3, 4));
        assert!(must_refute(3, 3));
        assert!(!must_refute(4, 3));
    }

    #[test]
    fn a_refutation_beats_any_accusation_even_the_largest_incarnation() {
        for own in [0, 7, u32::MAX - 1, u32::MAX, 1 << 31] {
            for accused in [
                0,
                own,
                own.wrapping_add(1),
                u32::MAX,
                own.wrapping_add((1 << 31) - 1),
            ] {
                let held_dead = dead_overrides(Alive, own, accused);
                if !held_dead {
                    continue;
                }
                assert!(must_refute(own, accused), "{own} {accused}");
                let r = refutation(own, accused);
                assert!(alive_overrides(Dead, accused, r), "{own} {accused} -> {r}");
                assert!(alive_overrides(Suspect, accused, r));
            }
        }
        // The largest integer is just below 0 in serial order: against a member at 0 it is an
        // old claim; against one at 0xFFFF_FFF0 it is newer, and refuted at 0.
        assert!(!dead_overrides(Alive, 0, u32::MAX));
        assert!(dead_overrides(Alive, u32::MAX - 15, u32::MAX));
        assert_eq!(refutation(u32::MAX - 15, u32::MAX), 0);
        assert!(alive_overrides(Dead, u32::MAX, 0));
        // Half the space away is neither newer nor older: such a claim changes nothing.
        assert!(!newer(1 << 31, 0) && !newer(0, 1 << 31));
        assert!(!dead_overrides(Alive, 0, 1 << 31));
    }
}
