//! SWIM's precedence rules between claims about a member, ordered by incarnation.
//!
//! Only the member itself raises its incarnation (to refute an accusation or to
//! announce a change); everyone else compares. These functions are the whole rule
//! set, kept apart so they can be read and tested on their own.

use crate::member::State;

/// Whether "alive at `inc`" replaces what is held: only a strictly newer incarnation does,
/// whatever the held state (this is how a refutation beats a suspicion or a death).
pub fn alive_overrides(_held: State, held_inc: u32, inc: u32) -> bool {
    inc > held_inc
}

/// Whether "suspect at `inc`" replaces what is held: an alive member at the same or an older
/// incarnation becomes suspect; a suspect one only moves to a newer incarnation; the dead and
/// departed stay as they are.
pub fn suspect_overrides(held: State, held_inc: u32, inc: u32) -> bool {
    match held {
        State::Alive => inc >= held_inc,
        State::Suspect => inc > held_inc,
        State::Dead | State::Left => false,
    }
}

/// Whether "dead at `inc`" replaces what is held: alive or suspect at the same or an older
/// incarnation die; the dead and departed stay as they are.
pub fn dead_overrides(held: State, held_inc: u32, inc: u32) -> bool {
    match held {
        State::Alive | State::Suspect => inc >= held_inc,
        State::Dead | State::Left => false,
    }
}

/// Whether "left at `inc`" replaces what is held: anything at the same or an older
/// incarnation, a failed member included (leaving is the more precise news).
pub fn leave_overrides(held: State, held_inc: u32, inc: u32) -> bool {
    held != State::Left && inc >= held_inc
}

/// Whether an accusation at `accused_inc` of a node at `own_inc` must be refuted
/// (it must, unless the node already moved past it).
pub fn must_refute(own_inc: u32, accused_inc: u32) -> bool {
    accused_inc >= own_inc
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
}
