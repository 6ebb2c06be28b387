//! Every built-in merge is commutative, associative and idempotent, on states reached by
//! arbitrary interleavings of writes and merges on three replicas.

use grapevine_core::state::crdt::{
    AwSet, EpochRegister, Lww, MaxRegister, MvRegister, PnCounter, VersionVector,
};
use grapevine_core::state::Timestamp;
use grapevine_core::Name;
use proptest::prelude::*;

fn name(i: u8) -> Name {
    Name::new(["a", "b", "c"][usize::from(i % 3)]).unwrap()
}

/// The three laws for a merge `m`.
fn laws<T: Clone + PartialEq + std::fmt::Debug>(a: &T, b: &T, c: &T, m: impl Fn(&mut T, &T)) {
    let merged = |x: &T, y: &T| {
        let mut z = x.clone();
        m(&mut z, y);
        z
    };
    assert_eq!(merged(a, b), merged(b, a), "commutative");
    assert_eq!(
        merged(&merged(a, b), c),
        merged(a, &merged(b, c)),
        "associative"
    );
    assert_eq!(merged(a, a), *a, "idempotent");
}

/// An operation on replica `r`: a write, or a merge from replica `from`.
#[derive(Clone, Debug)]
enum Op {
    Write { r: u8, x: u8, neg: bool },
    Remove { r: u8, x: u8 },
    Merge { r: u8, from: u8 },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            (0u8..3, 0u8..4, any::<bool>()).prop_map(|(r, x, neg)| Op::Write { r, x, neg }),
            (0u8..3, 0u8..4).prop_map(|(r, x)| Op::Remove { r, x }),
            (0u8..3, 0u8..3).prop_map(|(r, from)| Op::Merge { r, from }),
        ],
        0..40,
    )
}

/// Runs `ops` on three replicas of `T` and returns them.
fn replay<T: Clone + Default>(
    ops: &[Op],
    write: impl Fn(&mut T, &Name, u8, bool),
    remove: impl Fn(&mut T, &Name, u8),
    merge: impl Fn(&mut T, &T),
) -> [T; 3] {
    let mut r: [T; 3] = [T::default(), T::default(), T::default()];
    for op in ops {
        match *op {
            Op::Write { r: i, x, neg } => write(&mut r[usize::from(i)], &name(i), x, neg),
            Op::Remove { r: i, x } => remove(&mut r[usize::from(i)], &name(i), x),
            Op::Merge { r: i, from } => {
                let src = r[usize::from(from)].clone();
                merge(&mut r[usize::from(i)], &src);
            }
        }
    }
    r
}

proptest! {
    #[test]
    fn lww(ts in proptest::collection::vec(
        (0u64..4, 0u32..3, 0u8..3, proptest::option::of(0u8..3), proptest::option::of(0u64..2), 0u64..2),
        3,
    )) {
        let v: Vec<Lww> = ts.iter().map(|&(p, l, w, v, e, f)| Lww {
            at: Timestamp::new(p, l),
            writer: name(w),
            value: v.map(|b| vec![b]),
            expires_at: e,
            flags: f,
        }).collect();
        laws(&v[0], &v[1], &v[2], Lww::merge);
    }

    #[test]
    fn mv_register(ops in ops()) {
        let [a, b, c] = replay::<MvRegister>(
            &ops,
            |s, w, x, neg| {
                let ctx = if neg { VersionVector::default() } else { s.context() };
                s.write(w, &ctx, Some(vec![x]));
            },
            |s, w, _| { let ctx = s.context(); s.write(w, &ctx, None) },
            MvRegister::merge,
        );
        laws(&a, &b, &c, MvRegister::merge);
    }

    #[test]
    fn pn_counter(ops in ops()) {
        let [a, b, c] = replay::<PnCounter>(
            &ops,
            |s, w, x, neg| s.add(w, if neg { -i64::from(x) } else { i64::from(x) }),
            |s, w, x| s.add(w, -i64::from(x)),
            PnCounter::merge,
        );
        laws(&a, &b, &c, PnCounter::merge);
    }

    #[test]
    fn max_register(v in proptest::collection::vec(any::<i64>(), 3)) {
        laws(&MaxRegister(v[0]), &MaxRegister(v[1]), &MaxRegister(v[2]), MaxRegister::merge);
    }

    #[test]
    fn epoch_register(v in proptest::collection::vec((0u64..3, 0u8..3, 0u8..2), 3)) {
        let r: Vec<EpochRegister> = v.iter().map(|&(e, o, x)| EpochRegister {
            epoch: e,
            owner: name(o),
            value: vec![x],
        }).collect();
        laws(&r[0], &r[1], &r[2], EpochRegister::merge);
    }

    #[test]
    fn aw_set(ops in ops()) {
        let [a, b, c] = replay::<AwSet>(
            &ops,
            |s, w, x, _| s.add(w, vec![x]),
            |s, _, x| s.remove(&[x]),
            AwSet::merge,
        );
        laws(&a, &b, &c, AwSet::merge);
    }
}
