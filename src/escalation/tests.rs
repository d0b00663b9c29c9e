//! Unit tests of the escalation index: decay, levels and hysteresis, idempotence,
//! de-escalation, reciprocity, sweeps and the per-post contribution rules.

use super::*;
use chrono::TimeZone;

fn t(h: f64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 8, 1, 0, 0, 0).unwrap()
        + chrono::Duration::seconds((h * 3600.0) as i64)
}

fn c(id: &str, actor: &str, target: &str, cat: &str, weight: f64, h: f64) -> Contribution {
    Contribution {
        id: id.into(),
        alert_ids: vec![format!("a-{id}")],
        rule_ids: vec!["r".into()],
        category: cat.into(),
        actor: actor.into(),
        target: target.into(),
        at: t(h),
        score: weight.abs(),
        tier: Tier::ForeignMinistry,
        registered: true,
        weight,
        post_id: format!("p-{id}"),
        url: None,
        handle: None,
    }
}

fn kinds(v: &[Escalation]) -> Vec<String> {
    v.iter()
        .map(|e| {
            format!(
                "{} {}>{} {}",
                e.kind.as_str(),
                e.actor,
                e.target,
                e.level.as_deref().unwrap_or("none")
            )
        })
        .collect()
}

fn settings() -> Settings {
    Settings {
        half_life_hours: 24.0,
        ..Settings::default()
    }
}

#[test]
fn value_halves_every_half_life() {
    let s = settings();
    let mut ix = Index::default();
    ix.apply(c("1", "SA", "CA", "sanctions", 8.0, 0.0), &s, None);
    let v = |h| ix.view(Some(t(h)), &s)[0].index;
    assert_eq!(v(0.0), 8.0);
    assert_eq!(v(24.0), 4.0);
    assert_eq!(v(48.0), 2.0);
}

#[test]
fn levels_rise_once_and_hysteresis_stops_flapping() {
    let s = settings();
    let mut ix = Index::default();
    let mut all = Vec::new();
    all.extend(ix.apply(c("1", "SA", "CA", "persona_non_grata", 7.0, 0.0), &s, None));
    all.extend(ix.apply(c("2", "SA", "CA", "sanctions", 6.0, 1.0), &s, None));
    all.extend(ix.apply(c("3", "SA", "CA", "persona_non_grata", 12.0, 2.0), &s, None));
    assert_eq!(
        kinds(&all),
        [
            "escalation SA>CA watch",
            "escalation SA>CA warning",
            "escalation SA>CA crisis"
        ]
    );
    let e = &all[2];
    assert_eq!(e.previous_level.as_deref(), Some("warning"));
    assert_eq!(e.contributing.len(), 3);
    assert_eq!(e.contributing[0].id, "3", "newest first");
    assert_eq!(e.severity, "critical");
    // 24.5 at t=2h; 19 hours later the index is ~14.2: below 24, above 24 × 0.75 = 18? no:
    // 24.5 × 2^(-19/24) ≈ 14.2 < 18 → one step down to warning, not two.
    let out = ix.apply(c("4", "SA", "CA", "sanctions", 0.5, 21.0), &s, None);
    assert_eq!(kinds(&out), ["de_escalation SA>CA warning"]);
    // Back above 12 but below 24: no new alert (it is already warning).
    let out = ix.apply(c("5", "SA", "CA", "sanctions", 1.0, 21.5), &s, None);
    assert!(out.is_empty(), "{:?}", kinds(&out));
}

#[test]
fn folding_a_contribution_twice_changes_nothing() {
    let s = settings();
    let seq = [
        c("1", "GB", "RU", "persona_non_grata", 10.5, 0.0),
        c("2", "GB", "RU", "sanctions", 9.0, 0.1),
        c("3", "RU", "GB", "persona_non_grata", 7.0, 70.0),
    ];
    let mut ix = Index::default();
    let first: Vec<_> = seq
        .iter()
        .flat_map(|x| ix.apply(x.clone(), &s, None))
        .collect();
    let again: Vec<_> = seq
        .iter()
        .flat_map(|x| ix.apply(x.clone(), &s, None))
        .collect();
    assert!(!first.is_empty());
    assert!(again.is_empty(), "{:?}", kinds(&again));
    let mut fresh = Index::default();
    let replay: Vec<_> = seq
        .iter()
        .flat_map(|x| fresh.apply(x.clone(), &s, None))
        .collect();
    assert_eq!(first, replay, "same input, same alerts and ids");
}

#[test]
fn de_escalation_lowers_both_directions() {
    let s = settings();
    let mut ix = Index::default();
    ix.apply(c("1", "FR", "US", "persona_non_grata", 13.0, 0.0), &s, None);
    ix.apply(c("2", "US", "FR", "persona_non_grata", 6.0, 1.0), &s, None);
    // The US says relations are restored: a negative contribution for US>FR and FR>US.
    let out = ix.apply(c("3", "US", "FR", "de_escalation", -9.0, 2.0), &s, None);
    assert_eq!(
        kinds(&out),
        ["de_escalation US>FR none", "de_escalation FR>US none"]
    );
    assert_eq!(out[0].severity, "low");
    // A de-escalation signal for an unknown pair creates nothing.
    assert!(ix
        .apply(c("4", "JP", "KR", "de_escalation", -6.0, 3.0), &s, None)
        .is_empty());
    assert!(ix.view(None, &s).iter().all(|p| p.actor != "JP"));
}

#[test]
fn answer_in_kind_within_the_window_is_tit_for_tat_once() {
    let s = settings();
    let mut ix = Index::default();
    ix.apply(c("1", "GB", "RU", "persona_non_grata", 7.0, 0.0), &s, None);
    let out = ix.apply(c("2", "RU", "GB", "persona_non_grata", 7.0, 72.0), &s, None);
    // (Three half-lives later GB>RU has decayed below watch: the sweep says so.)
    assert_eq!(
        kinds(&out),
        [
            "tit_for_tat RU>GB none",
            "escalation RU>GB watch",
            "de_escalation GB>RU none"
        ]
    );
    let tft = &out[0];
    assert_eq!(
        tft.contributing
            .iter()
            .map(|x| x.id.as_str())
            .collect::<Vec<_>>(),
        ["2", "1"]
    );
    // A second answer in the same window: no second tit-for-tat.
    let out = ix.apply(c("3", "RU", "GB", "persona_non_grata", 7.0, 73.0), &s, None);
    assert!(
        out.iter().all(|e| e.kind != Kind::TitForTat),
        "{:?}",
        kinds(&out)
    );
    // Another category is not "in kind".
    let out = ix.apply(
        c("4", "GB", "RU", "incendiary_imagery", 1.0, 74.0),
        &s,
        None,
    );
    assert!(out.iter().all(|e| e.kind != Kind::TitForTat));
    // Outside the window: nothing.
    let mut ix = Index::default();
    let s2 = Settings {
        half_life_hours: 10_000.0,
        ..settings()
    };
    ix.apply(c("1", "US", "RU", "sanctions", 6.0, 0.0), &s2, None);
    let out = ix.apply(c("2", "RU", "US", "sanctions", 6.0, 337.0), &s2, None);
    assert!(
        out.iter().all(|e| e.kind != Kind::TitForTat),
        "{:?}",
        kinds(&out)
    );
}

#[test]
fn decay_lowers_quiet_pairs_at_the_next_sweep() {
    let s = settings();
    let mut ix = Index::default();
    ix.apply(c("1", "FR", "AU", "persona_non_grata", 13.0, 0.0), &s, None);
    // Another pair's post three days later moves event time on: FR>AU has decayed.
    let out = ix.apply(c("2", "CN", "JP", "sanctions", 1.0, 72.0), &s, None);
    assert_eq!(kinds(&out), ["de_escalation FR>AU none"]);
    assert!(
        out[0].id
            != ix
                .apply(c("3", "CN", "JP", "sanctions", 1.0, 200.0), &s, None)
                .first()
                .map(|e| e.id.clone())
                .unwrap_or_default()
    );
}

#[test]
fn contributions_older_than_the_cutoff_are_dropped() {
    let s = settings(); // cutoff 5 × 24 h
    let mut ix = Index::default();
    ix.apply(c("1", "SA", "CA", "sanctions", 6.0, 200.0), &s, None);
    // Arrives late, from before the cutoff: ignored.
    assert!(ix
        .apply(c("0", "SA", "CA", "sanctions", 60.0, 10.0), &s, None)
        .is_empty());
    assert_eq!(ix.view(None, &s)[0].evidence.len(), 1);
    // A late one inside the cutoff counts, decayed.
    ix.apply(c("2", "SA", "CA", "sanctions", 8.0, 176.0), &s, None);
    assert_eq!(ix.view(None, &s)[0].index, 10.0);
}

fn alert(
    id: &str,
    rule: &str,
    cat: &str,
    score: f64,
    actor: Option<&str>,
    targets: &[&str],
    tags: &[&str],
) -> Alert {
    let j = serde_json::json!({
        "schema": "attache.alert.v1", "id": id, "fired_at": null,
        "rule": {"id": rule, "title": "t", "category": cat, "severity": "high", "tags": tags},
        "actor": actor, "targets": targets, "score": score,
        "post": {"id": "p1", "platform": "x", "url": "https://x.example/1", "created_at": null, "lang": null,
                 "account": {"handle": "h", "country": actor, "role": null}, "text": "t"},
        "evidence": [], "source": null
    });
    serde_json::from_value(j).unwrap()
}

#[test]
fn contributions_take_the_highest_score_per_category_and_target() {
    let s = Settings::default();
    let alerts: Vec<std::sync::Arc<Alert>> = [
        alert(
            "a1",
            "png.declared",
            "persona_non_grata",
            7.0,
            Some("SA"),
            &["CA"],
            &[],
        ),
        alert(
            "a2",
            "png.recall",
            "persona_non_grata",
            6.0,
            Some("SA"),
            &["CA", "DE"],
            &[],
        ),
        alert(
            "a3",
            "sanctions.trade",
            "sanctions",
            6.0,
            Some("SA"),
            &["CA"],
            &[],
        ),
        alert(
            "a5",
            "de.restored",
            "de_escalation",
            4.0,
            Some("FR"),
            &["US"],
            &[],
        ),
        alert(
            "a6",
            "png.declared",
            "persona_non_grata",
            7.0,
            None,
            &["CA"],
            &[],
        ),
        alert(
            "a7",
            "png.declared",
            "persona_non_grata",
            7.0,
            Some("SA"),
            &[],
            &[],
        ),
    ]
    .into_iter()
    .map(std::sync::Arc::new)
    .collect();
    let cs = contributions(&alerts, Tier::HeadOfState, true, t(0.0), &s);
    let got: Vec<String> = cs
        .iter()
        .map(|c| {
            format!(
                "{} {}>{} {} {:?}",
                c.category, c.actor, c.target, c.weight, c.alert_ids
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "de_escalation FR>US -6 [\"a5\"]",
            "persona_non_grata SA>CA 10.5 [\"a1\", \"a2\"]",
            "persona_non_grata SA>DE 9 [\"a2\"]",
            "sanctions SA>CA 9 [\"a3\"]",
        ]
    );
    // Unregistered accounts: the configured weight, or nothing.
    let cs = contributions(&alerts[..1], Tier::HeadOfState, false, t(0.0), &s);
    assert_eq!(cs[0].weight, 3.5);
    let drop = Settings {
        unregistered_weight: None,
        ..Settings::default()
    };
    assert!(contributions(&alerts[..1], Tier::HeadOfState, false, t(0.0), &drop).is_empty());
    assert_eq!(cs[0].pair_key(), "CA|SA");
}

#[test]
fn a_post_reporting_a_measure_against_its_state_counts_for_the_other_side() {
    // Canada: "our ambassador was declared persona non grata by Saudi Arabia". One rule
    // sees the expulsion, another (tagged against_actor) sees that it targets Canada:
    // the whole category counts for SA → CA; other categories keep their direction.
    let s = Settings::default();
    let alerts: Vec<Alert> = vec![
        alert(
            "b1",
            "png.expel",
            "persona_non_grata",
            7.0,
            Some("CA"),
            &["SA"],
            &[],
        ),
        alert(
            "b2",
            "png.reported",
            "persona_non_grata",
            4.0,
            Some("CA"),
            &["SA"],
            &["against_actor"],
        ),
        alert(
            "b3",
            "sanctions.trade",
            "sanctions",
            6.0,
            Some("CA"),
            &["SA"],
            &[],
        ),
    ];
    let cs = contributions(&alerts, Tier::ForeignMinistry, true, t(0.0), &s);
    let got: Vec<String> = cs
        .iter()
        .map(|c| format!("{} {}>{} {}", c.category, c.actor, c.target, c.weight))
        .collect();
    assert_eq!(got, ["persona_non_grata SA>CA 7", "sanctions CA>SA 6"]);
}
