//! Gates: which rules are worth evaluating on a post. A rule's gate is a necessary
//! condition of its `when` in conjunctive form (clauses of term sets); the rule can
//! fire only if every clause has a set that was found. The index counts satisfied
//! clauses per rule as sets are found, so a post costs one step per (found set,
//! clause naming it), whatever the number of rules.
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

/// Per set, the clauses naming it; per clause, its rule; per rule, its clause count.
#[derive(Debug, Default, Clone)]
pub(crate) struct GateIndex {
    /// Per set, a range into `refs`.
    set_refs: Vec<(u32, u32)>,
    /// Clause ids.
    refs: Vec<u32>,
    clause_rule: Vec<u32>,
    rule_clauses: Vec<u32>,
}

impl GateIndex {
    /// Index `gates[r]` (the clauses of rule `r`) over `sets` term sets.
    pub(crate) fn new<'g>(gates: impl Iterator<Item = &'g [Vec<u32>]>, sets: usize) -> Self {
        let mut by_set: Vec<Vec<u32>> = vec![Vec::new(); sets];
        let mut clause_rule = Vec::new();
        let mut rule_clauses = Vec::new();
        for (r, gate) in gates.enumerate() {
            rule_clauses.push(gate.len() as u32);
            for clause in gate {
                let c = clause_rule.len() as u32;
                clause_rule.push(r as u32);
                for &s in clause {
                    by_set[s as usize].push(c);
                }
            }
        }
        let mut set_refs = Vec::with_capacity(sets);
        let mut refs = Vec::new();
        for v in by_set {
            let start = refs.len() as u32;
            refs.extend(v);
            set_refs.push((start, refs.len() as u32));
        }
        Self {
            set_refs,
            refs,
            clause_rule,
            rule_clauses,
        }
    }

    /// Whether set `s` is named by some clause.
    pub(crate) fn names(&self, s: u32) -> bool {
        self.set_refs.get(s as usize).is_some_and(|(a, b)| a < b)
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
    /// Note that set `s` was found; calls `open(rule)` for each rule whose gate now
    /// holds (once per rule between resets). Returns whether some rule opened.
    pub(crate) fn found(&mut self, idx: &GateIndex, s: u32, mut open: impl FnMut(u32)) -> bool {
        if self.count.len() != idx.rule_clauses.len()
            || self.done.len() != idx.clause_rule.len().div_ceil(64)
        {
            self.count = vec![0; idx.rule_clauses.len()];
            self.done = vec![0; idx.clause_rule.len().div_ceil(64)];
        }
        let Some(&(a, b)) = idx.set_refs.get(s as usize) else {
            return false;
        };
        let mut opened = false;
        for &c in &idx.refs[a as usize..b as usize] {
            let (w, bit) = ((c / 64) as usize, 1u64 << (c % 64));
            if self.done[w] & bit != 0 {
                continue;
            }
            self.done[w] |= bit;
            self.touched_clauses.push(c);
            let r = idx.clause_rule[c as usize];
            let n = &mut self.count[r as usize];
            if *n == 0 {
                self.touched_rules.push(r);
            }
            *n += 1;
            if *n == idx.rule_clauses[r as usize] {
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
            c.found(&idx, s, |r| opened.push(r));
        }
        assert_eq!(opened, vec![1, 0]);
        c.reset();
        opened.clear();
        c.found(&idx, 1, |r| opened.push(r));
        assert!(opened.is_empty(), "reset forgets the clauses found before");
        c.found(&idx, 2, |r| opened.push(r));
        assert_eq!(opened, vec![0]);
    }
}
