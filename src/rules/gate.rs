//! Gates: which rules are worth evaluating on a post. A rule's gate is a necessary
//! condition of its `when` in conjunctive form (clauses of term sets); the rule can
//! fire only if every clause has a set that was found. The index counts satisfied
//! clauses per rule as items are found (the full scan's atoms, see
//! `compile::ScanItem`, or the trigger automaton's sets), so a post costs one step per
//! (found item, counted clause naming it), whatever the number of rules. Small
//! clauses other than a rule's rarest are not counted but checked once the counted
//! ones hold (see [`GateIndex::with_checks`]).
//!
//! Pure: no I/O.

use super::compile::Cond;

/// Largest clause (in terms) the trigger automaton checks; larger ones (the country
/// names, say) are left to the full scan unless a rule has no smaller one.
pub(crate) const TRIGGER_CLAUSE_TERMS: usize = 1500;
/// Most clauses distributing an `any` over its children's clauses may produce.
const MAX_GATE_CLAUSES: usize = 64;

/// Number of terms of a clause: the sum of `size` over its sets.
pub(crate) fn clause_terms(clause: &[u32], size: &[usize]) -> usize {
    clause.iter().map(|s| size[*s as usize]).sum()
}

/// A necessary condition of `c` in conjunctive form: clauses of sets, each sorted;
/// `c` can hold only if every clause has a set that was found. Empty when nothing is
/// necessary (`none` alone).
/// `size` is the number of terms of each set.
pub(crate) fn cnf(c: &Cond, size: &[usize]) -> Vec<Vec<u32>> {
    let mut out = match c {
        Cond::Set(s) => vec![vec![*s]],
        Cond::All(ch) | Cond::Near { children: ch, .. } => {
            ch.iter().flat_map(|k| cnf(k, size)).collect()
        }
        Cond::AtLeast(n, ch) if *n == ch.len() => ch.iter().flat_map(|k| cnf(k, size)).collect(),
        Cond::Any(ch) | Cond::AtLeast(_, ch) => {
            // (a1 ∧ a2) ∨ (b1) = (a1 ∨ b1) ∧ (a2 ∨ b1): one clause per choice of a
            // clause from each child; past the cap, one clause of each child's clause
            // with the fewest terms.
            let kids: Vec<Vec<Vec<u32>>> = ch.iter().map(|k| cnf(k, size)).collect();
            if kids.iter().any(|k| k.is_empty()) {
                return Vec::new();
            }
            let product = kids
                .iter()
                .try_fold(1usize, |acc, k| acc.checked_mul(k.len()))
                .unwrap_or(usize::MAX);
            if product > MAX_GATE_CLAUSES {
                let mut one: Vec<u32> = kids
                    .iter()
                    .flat_map(|k| {
                        k.iter()
                            .min_by_key(|c| clause_terms(c, size))
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                one.sort_unstable();
                one.dedup();
                vec![one]
            } else {
                let mut acc: Vec<Vec<u32>> = vec![Vec::new()];
                for k in &kids {
                    let mut next = Vec::with_capacity(acc.len() * k.len());
                    for a in &acc {
                        for c in k {
                            let mut u = a.clone();
                            u.extend_from_slice(c);
                            u.sort_unstable();
                            u.dedup();
                            next.push(u);
                        }
                    }
                    acc = next;
                }
                acc
            }
        }
        Cond::None(_) => Vec::new(),
    };
    out.sort();
    out.dedup();
    // A clause that contains another is implied by it.
    let all = out.clone();
    out.retain(|c| {
        !all.iter()
            .any(|d| d != c && d.len() <= c.len() && d.iter().all(|s| c.binary_search(s).is_ok()))
    });
    out
}

/// Most items a clause may have to be checked (see [`GateIndex::with_checks`]).
const CHECK_ITEMS: usize = 8;

/// A counted clause naming an item, with what its rule needs to open.
#[derive(Debug, Clone, Copy)]
struct Ref {
    clause: u32,
    rule: u32,
    /// The rule's number of counted clauses.
    need: u32,
    /// The rule's checked clauses: a range into `GateIndex::check_items`.
    checks: (u32, u32),
}

/// Per item, the counted clauses naming it (with their rule and the rule's number of
/// counted clauses); per rule, the clauses checked once its counted clauses hold.
#[derive(Debug, Default, Clone)]
pub(crate) struct GateIndex {
    /// Per item, a range into `refs`.
    item_refs: Vec<(u32, u32)>,
    /// One sequential read per step of [`GateCounter::found`].
    refs: Vec<Ref>,
    /// Number of counted clauses.
    clauses: usize,
    /// Number of rules.
    rules: usize,
    /// The checked clauses, each its length followed by its items.
    check_items: Vec<u32>,
    /// Items named by a checked clause.
    checked: Vec<bool>,
}

impl GateIndex {
    /// Index `gates[r]` (the clauses of rule `r`) over `items` items, every clause
    /// counted (for the trigger automaton, whose items are found one by one).
    pub(crate) fn new<'g>(gates: impl Iterator<Item = &'g [Vec<u32>]>, items: usize) -> Self {
        Self::build(gates, items, None::<fn(&[u32]) -> u64>)
    }

    /// Like [`GateIndex::new`], but for items that are all known before the first
    /// [`GateCounter::found`]: of the clauses of at most `CHECK_ITEMS` items, only the
    /// one of highest `rarity` is counted (none when a larger clause is), and the others
    /// are checked when the rule's counted clauses hold. A rule of two small clauses
    /// then costs a step only when its rarer clause is found, not when either is.
    pub(crate) fn with_checks<'g>(
        gates: impl Iterator<Item = &'g [Vec<u32>]>,
        items: usize,
        rarity: impl Fn(&[u32]) -> u64,
    ) -> Self {
        Self::build(gates, items, Some(rarity))
    }

    fn build<'g>(
        gates: impl Iterator<Item = &'g [Vec<u32>]>,
        items: usize,
        rarity: Option<impl Fn(&[u32]) -> u64>,
    ) -> Self {
        let mut by_item: Vec<Vec<[u32; 2]>> = vec![Vec::new(); items];
        let mut need = Vec::new();
        let mut clauses = 0usize;
        let mut rule_checks = Vec::new();
        let mut check_items = Vec::new();
        let mut checked = vec![false; items];
        for (r, gate) in gates.enumerate() {
            let small = |c: &Vec<u32>| c.len() <= CHECK_ITEMS;
            // The one small clause to count, if any small clause is checked at all.
            let counted_small = rarity.as_ref().and_then(|rarity| {
                if gate.iter().all(small) {
                    gate.iter()
                        .enumerate()
                        .max_by_key(|(_, c)| rarity(c))
                        .map(|(i, _)| i)
                } else {
                    Some(usize::MAX)
                }
            });
            let first_check = check_items.len() as u32;
            let mut n = 0u32;
            for (i, clause) in gate.iter().enumerate() {
                let check = counted_small.is_some_and(|k| k != i && small(clause));
                if check {
                    check_items.push(clause.len() as u32);
                    check_items.extend_from_slice(clause);
                    for &s in clause {
                        checked[s as usize] = true;
                    }
                    continue;
                }
                for &s in clause {
                    by_item[s as usize].push([clauses as u32, r as u32]);
                }
                clauses += 1;
                n += 1;
            }
            need.push(n);
            rule_checks.push((first_check, check_items.len() as u32));
        }
        let mut item_refs = Vec::with_capacity(items);
        let mut refs = Vec::new();
        for v in by_item {
            let start = refs.len() as u32;
            refs.extend(v.into_iter().map(|[c, r]| Ref {
                clause: c,
                rule: r,
                need: need[r as usize],
                checks: rule_checks[r as usize],
            }));
            item_refs.push((start, refs.len() as u32));
        }
        Self {
            item_refs,
            refs,
            clauses,
            rules: need.len(),
            check_items,
            checked,
        }
    }

    /// Whether item `s` is named by some clause.
    pub(crate) fn names(&self, s: u32) -> bool {
        self.item_refs.get(s as usize).is_some_and(|(a, b)| a < b)
            || self.checked.get(s as usize).is_some_and(|c| *c)
    }

    /// Whether every checked clause in `check_items[a..b]` has an item for which
    /// `has` holds.
    fn checks_hold(&self, (a, b): (u32, u32), has: &impl Fn(u32) -> bool) -> bool {
        let mut rest = &self.check_items[a as usize..b as usize];
        while let Some((&n, tail)) = rest.split_first() {
            let (clause, next) = tail.split_at(n as usize);
            if !clause.iter().any(|&s| has(s)) {
                return false;
            }
            rest = next;
        }
        true
    }
}

/// Reusable per-post state of a [`GateIndex`]: satisfied clauses and, per rule, how
/// many of its clauses are.
#[derive(Debug, Default)]
pub(crate) struct GateCounter {
    done: Vec<u64>,
    count: Vec<u32>,
    touched_clauses: Vec<u32>,
    touched_rules: Vec<u32>,
}

impl GateCounter {
    /// Note that item `s` was found; calls `open(rule)` for each rule whose gate now
    /// holds (once per rule between resets): its counted clauses all have a found item,
    /// and its checked clauses an item for which `has` holds. Returns whether some rule
    /// opened.
    pub(crate) fn found(
        &mut self,
        idx: &GateIndex,
        s: u32,
        has: impl Fn(u32) -> bool,
        mut open: impl FnMut(u32),
    ) -> bool {
        if self.count.len() != idx.rules || self.done.len() != idx.clauses.div_ceil(64) {
            self.count = vec![0; idx.rules];
            self.done = vec![0; idx.clauses.div_ceil(64)];
        }
        let Some(&(a, b)) = idx.item_refs.get(s as usize) else {
            return false;
        };
        let mut opened = false;
        for &Ref {
            clause: c,
            rule: r,
            need,
            checks,
        } in &idx.refs[a as usize..b as usize]
        {
            let (w, bit) = ((c / 64) as usize, 1u64 << (c % 64));
            if self.done[w] & bit != 0 {
                continue;
            }
            self.done[w] |= bit;
            self.touched_clauses.push(c);
            let n = &mut self.count[r as usize];
            if *n == 0 {
                self.touched_rules.push(r);
            }
            *n += 1;
            if *n == need && idx.checks_hold(checks, &has) {
                opened = true;
                open(r);
            }
        }
        opened
    }

    /// Forget everything found.
    pub(crate) fn reset(&mut self) {
        for &c in &self.touched_clauses {
            self.done[(c / 64) as usize] = 0;
        }
        for &r in &self.touched_rules {
            self.count[r as usize] = 0;
        }
        self.touched_clauses.clear();
        self.touched_rules.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: u32) -> Cond {
        Cond::Set(s)
    }

    #[test]
    fn all_of_sets_is_one_clause_each() {
        let c = Cond::All(vec![set(1), set(2)]);
        assert_eq!(cnf(&c, &[1; 4]), vec![vec![1], vec![2]]);
    }

    #[test]
    fn any_distributes_over_its_children() {
        // (1 ∧ 2) ∨ 3 = (1 ∨ 3) ∧ (2 ∨ 3)
        let c = Cond::Any(vec![Cond::All(vec![set(1), set(2)]), set(3)]);
        assert_eq!(cnf(&c, &[1; 4]), vec![vec![1, 3], vec![2, 3]]);
    }

    #[test]
    fn none_is_not_necessary_and_an_any_with_it_has_no_gate() {
        let c = Cond::Any(vec![set(1), Cond::None(vec![set(2)])]);
        assert!(cnf(&c, &[1; 4]).is_empty());
        let c = Cond::All(vec![set(1), Cond::None(vec![set(2)])]);
        assert_eq!(cnf(&c, &[1; 4]), vec![vec![1]]);
    }

    #[test]
    fn a_clause_containing_another_is_dropped() {
        // 1 ∧ (1 ∨ 2) = 1
        let c = Cond::All(vec![set(1), Cond::Any(vec![set(1), set(2)])]);
        assert_eq!(cnf(&c, &[1; 4]), vec![vec![1]]);
    }

    #[test]
    fn past_the_cap_one_clause_of_each_child_with_the_fewest_terms() {
        // 7 children of 2 clauses each: 128 > 64 combinations.
        let kids: Vec<Cond> = (0..7)
            .map(|k| Cond::All(vec![set(2 * k), set(2 * k + 1)]))
            .collect();
        let mut size = vec![10; 14];
        for k in 0..7 {
            size[2 * k + 1] = 1;
        }
        let g = cnf(&Cond::Any(kids), &size);
        assert_eq!(g, vec![(0..7).map(|k| 2 * k + 1).collect::<Vec<u32>>()]);
    }

    #[test]
    fn a_rule_opens_once_when_every_clause_is_satisfied_in_any_order() {
        // rule 0: 1 ∧ (2 ∨ 3); rule 1: 3
        let gates = [vec![vec![1], vec![2, 3]], vec![vec![3]]];
        let idx = GateIndex::new(gates.iter().map(|g| g.as_slice()), 4);
        let mut c = GateCounter::default();
        let mut opened = Vec::new();
        for s in [3, 2, 1] {
            c.found(&idx, s, |_| true, |r| opened.push(r));
        }
        assert_eq!(opened, vec![1, 0]);
        c.reset();
        opened.clear();
        c.found(&idx, 1, |_| true, |r| opened.push(r));
        assert!(opened.is_empty(), "reset forgets the clauses found before");
        c.found(&idx, 2, |_| true, |r| opened.push(r));
        assert_eq!(opened, vec![0]);
    }

    #[test]
    fn a_checked_clause_is_tested_when_the_counted_one_holds() {
        // rule 0: 1 ∧ 2, where 2 is the rarer: only 2 is counted, 1 is checked.
        let gates = [vec![vec![1], vec![2]]];
        let rarity = |c: &[u32]| u64::from(c[0]);
        let idx = GateIndex::with_checks(gates.iter().map(|g| g.as_slice()), 3, rarity);
        assert!(idx.names(1) && idx.names(2), "checked items are named too");
        let mut c = GateCounter::default();
        let mut opened = Vec::new();
        assert!(
            !c.found(&idx, 1, |_| true, |r| opened.push(r)),
            "1 is not counted"
        );
        assert!(
            !c.found(&idx, 2, |s| s == 2, |r| opened.push(r)),
            "1 was not found"
        );
        c.reset();
        assert!(c.found(&idx, 2, |s| s == 1 || s == 2, |r| opened.push(r)));
        assert_eq!(opened, vec![0]);
    }

    #[test]
    fn a_large_clause_is_counted_and_every_small_one_checked() {
        // rule 0: (0 ∨ … ∨ 9) ∧ 10 ∧ 11: the ten-item clause is counted, 10 and 11
        // are checked.
        let gates = [vec![(0..10).collect::<Vec<u32>>(), vec![10], vec![11]]];
        let idx = GateIndex::with_checks(gates.iter().map(|g| g.as_slice()), 12, |_| 0);
        let mut c = GateCounter::default();
        let mut opened = Vec::new();
        assert!(!c.found(&idx, 10, |_| true, |r| opened.push(r)));
        assert!(
            !c.found(&idx, 3, |s| s != 11, |r| opened.push(r)),
            "11 is missing"
        );
        c.reset();
        assert!(c.found(&idx, 7, |s| s >= 7, |r| opened.push(r)));
        assert_eq!(opened, vec![0]);
    }

    proptest::proptest! {
        /// With or without checked clauses, a rule opens exactly when every one of its
        /// clauses has a found item, whatever order the items are found in.
        #[test]
        fn opens_exactly_the_rules_whose_clauses_all_hold(
            gates in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0u32..24, 1..12), 0..4),
                1..12,
            ),
            found in proptest::collection::vec(0u32..24, 0..24),
            rarity_seed in 0u64..1000,
        ) {
            let mut found = found;
            found.sort_unstable();
            found.dedup();
            let want: Vec<u32> = gates
                .iter()
                .enumerate()
                .filter(|(_, g)| !g.is_empty() && g.iter().all(|c| c.iter().any(|s| found.contains(s))))
                .map(|(r, _)| r as u32)
                .collect();
            let rarity = |c: &[u32]| (c[0] as u64 * 7919 + rarity_seed) % 13;
            for idx in [
                GateIndex::new(gates.iter().map(Vec::as_slice), 24),
                GateIndex::with_checks(gates.iter().map(Vec::as_slice), 24, rarity),
            ] {
                let mut c = GateCounter::default();
                let mut opened = Vec::new();
                for &s in found.iter().rev() {
                    c.found(&idx, s, |a| found.contains(&a), |r| opened.push(r));
                }
                opened.sort_unstable();
                proptest::prop_assert_eq!(&opened, &want);
                c.reset();
            }
        }
    }
}
