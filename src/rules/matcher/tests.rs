//! Table-driven tests of the rule language, through the compiler and the matcher.

use super::*;
use crate::decode::{decode, Limits};
use crate::rules::{load_sources, Source};

const LISTS: &str = r#"
kind: lists
lists:
  negation: { en: ["not", "no", "never"], fr: ["pas"] }
  expel: { en: ["expel*", "persona non grata"], fr: ["expuls*"], zh: ["驱逐"], ar: ["*طرد"] }
  envoy: { en: ["ambassador*", "diplomat*"], fr: ["diplomate*"], zh: ["外交官"], ar: ["*سفير"] }
"#;

const COUNTRIES: &str = r#"
kind: countries
countries:
  CA: { en: ["canada", "canadian*", "ottawa"] }
  SA: { en: ["saudi arabia", "riyadh"] }
"#;

/// Compile one rule (YAML for the body of a rule after `id`) with the test lists.
fn rules(rule_yaml: &str) -> RuleSet {
    rules_with(LISTS, rule_yaml)
}

/// Like [`rules`], with other lists.
fn rules_with(lists: &str, rule_yaml: &str) -> RuleSet {
    let file = format!(
        "category: test\nrules:\n  - id: r\n    title: t\n    severity: high\n{}",
        indent(rule_yaml)
    );
    load_sources(&[
        Source {
            path: "lists.yaml".into(),
            text: lists.into(),
        },
        Source {
            path: "countries.yaml".into(),
            text: COUNTRIES.into(),
        },
        Source {
            path: "r.yaml".into(),
            text: file,
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Every rule of `rs` that fires on the post, in rule order.
fn matches(rs: &RuleSet, post_json: &str) -> Vec<RuleMatch> {
    let post = decode(post_json.as_bytes(), &Limits::default()).unwrap();
    let mut out = Vec::new();
    Matcher::new().match_post(rs, &post, &mut out);
    out
}

fn fires(rs: &RuleSet, post_json: &str) -> Option<RuleMatch> {
    matches(rs, post_json).into_iter().next()
}

/// `explain` of the post with a fresh matcher.
fn explain(rs: &RuleSet, post_json: &str) -> Vec<Trace> {
    let post = decode(post_json.as_bytes(), &Limits::default()).unwrap();
    Matcher::new().explain(rs, &post)
}

fn text(t: &str) -> String {
    serde_json::json!({"id": "1", "text": t}).to_string()
}

/// `t!(name, rule, [texts that fire], [texts that do not])`
macro_rules! t {
    ($name:ident, $rule:expr, [$($yes:expr),* $(,)?], [$($no:expr),* $(,)?]) => {
        #[test]
        fn $name() {
            let rs = rules($rule);
            $( assert!(fires(&rs, &text($yes)).is_some(), "should fire: {:?}", $yes); )*
            $( assert!(fires(&rs, &text($no)).is_none(), "should not fire: {:?}", $no); )*
        }
    };
}

t!(
    literal_phrase_with_word_boundaries,
    "when: { terms: [\"persona non grata\"] }",
    ["He is persona non grata.", "PERSONA NON GRATA!"],
    ["personas non gratas", "xpersona non grata"]
);

t!(
    prefix_wildcard,
    "when: { terms: [\"expel*\"] }",
    ["They expelled him", "we expel", "expulsion? no: expels"],
    ["inexpellable? no", "the pel"]
);

t!(
    suffix_wildcard_for_attached_prefixes,
    "when: { list: expel }",
    ["قررت الحكومة وطرد السفير"],
    ["nothing here"]
);

t!(
    inner_wildcard_phrase,
    "when: { terms: [\"freeze* assets\"] }",
    [
        "We freeze assets",
        "Canada froze? no — freezes assets today"
    ],
    ["assets freeze", "freezer"]
);

t!(
    unspaced_scripts_match_without_boundaries,
    "when: { list: expel }",
    ["中方决定驱逐两名外交官"],
    ["中方决定欢迎两名外交官"]
);

t!(
    regex_term,
    "when: { regex: \"\\\\b\\\\d+ diplomats\" }",
    ["23 diplomats must leave"],
    ["diplomats must leave"]
);

t!(
    all_of,
    "when: { all: [{ list: expel }, { list: envoy }] }",
    ["The ambassador was quiet. Later we expelled staff."],
    ["We expelled staff."]
);

t!(
    any_of,
    "when: { any: [{ terms: [\"embargo\"] }, { terms: [\"asset freeze\"] }] }",
    ["an embargo", "an asset freeze"],
    ["a freeze"]
);

t!(
    none_of,
    "when: { all: [{ list: expel }, { none: [{ terms: [\"football\"] }] }] }",
    ["We expel the diplomats."],
    ["Football: we expel the striker."]
);

t!(at_least_n,
   "when: { at_least: 2, of: [{ terms: [\"alpha\"] }, { terms: [\"beta\"] }, { terms: [\"gamma\"] }] }",
   ["alpha and gamma", "beta gamma alpha"],
   ["alpha alone", "alpha alpha"]);

t!(
    near_within_tokens,
    "when: { near: [{ list: expel }, { list: envoy }], within: 3 }",
    [
        "We expel the ambassador",
        "ambassador was expelled",
        "diplomats, we expel"
    ],
    ["We expel, after a long and difficult internal review of everything, the ambassador"]
);

t!(
    near_same_sentence,
    "when: { near: [{ list: expel }, { list: envoy }], sentence: true }",
    // A semicolon joins two clauses of one sentence ("the Presidential Palace in Vilnius;
    // a red reticle locks onto its roof"); a full stop or a line break ends it.
    [
        "We will, after long deliberation and review of the facts, expel the ambassador.",
        "Two diplomats were named yesterday; today we expel the ambassador."
    ],
    [
        "We expel nobody. The ambassador stays.",
        "We expel nobody\nThe ambassador stays."
    ]
);

t!(unless_negation_nearby,
   "when: { list: expel }\nunless:\n  - near: [{ list: negation }, { list: expel }]\n    within: 2",
   ["We expel the diplomats.", "We will not hesitate. We expel them."],
   ["We will not expel anyone."]);

t!(
    unless_scoped_to_sentence_keeps_other_sentences,
    "when: { list: expel }\nunless:\n  - any: [{ terms: [\"false\"] }]",
    ["Reports of talks are false. Today we expel three diplomats."],
    ["Reports that we expel diplomats are false."]
);

t!(
    unless_post_scope,
    "when: { list: expel }\nunless:\n  - any: [{ terms: [\"football\"] }]\n    scope: post",
    ["We expel three diplomats."],
    ["We expel three diplomats. Also: football results."]
);

t!(
    unless_distance,
    "when: { list: expel }\nunless:\n  - any: [{ terms: [\"1986\"] }]\n    distance: 2",
    ["In 1986 there was a summit; today, after many years of patience, we expel them."],
    ["the 1986 expulsion"]
);

t!(
    words_inside_web_and_mail_addresses_are_no_evidence,
    "when: { list: expel }",
    [
        "We expel the attaché. Details: https://mfa.example/news",
        "Expelled, see www.mfa.example/expel",
        "@expel_watch we expel them"
    ],
    [
        "https://mfa.example/news/expel-diplomats",
        "Statement: www.mfa.example/expelled.html",
        "Write to expel.desk@mfa.example for details",
        "中方通告见 https://mfa.example/驱逐"
    ]
);

/// A list whose hits do not count where they overlap a hit of another list.
#[test]
fn not_overlapping_drops_the_negation_of_a_false_negation() {
    let lists = r#"
kind: lists
lists:
  negation: { en: ["not", "will not", "no"], not_overlapping: [false_negation] }
  false_negation: { en: ["not only", "whether or not"], pt: ["no país"] }
  expel: { en: ["expel*"], pt: ["expuls*"] }
"#;
    let rs = rules_with(
        lists,
        "when: { list: expel }\nunless:\n  - near: [{ list: negation }, { list: expel }]\n    within: 3",
    );
    for yes in [
        "We will not only expel them but also close the consulate.",
        "Whether or not they protest, we expel them.",
        "O governo decide expulsar no país o diplomata.",
    ] {
        assert!(fires(&rs, &text(yes)).is_some(), "should fire: {yes:?}");
    }
    // A real negation in the same sentence as a false one still counts.
    for no in [
        "We will not expel them, not only because of the talks.",
        "We do not expel anyone.",
    ] {
        assert!(fires(&rs, &text(no)).is_none(), "should not fire: {no:?}");
    }
}

/// A hit that holds the other list's hit whole still counts: `大使` inside `大使馆`
/// (embassy) is no envoy, `大使馆工作人员` (embassy staff) is one.
#[test]
fn not_overlapping_keeps_hits_that_hold_the_other_hit() {
    let lists = r#"
kind: lists
lists:
  envoy: { zh: ["大使", "大使馆工作人员"], not_overlapping: [mission] }
  mission: { zh: ["大使馆"] }
  expel: { zh: ["驱逐"] }
"#;
    let rs = rules_with(
        lists,
        "when: { near: [{ list: expel }, { list: envoy }], within: 20 }",
    );
    assert!(fires(&rs, &text("中方决定驱逐两名大使馆工作人员。")).is_some());
    assert!(fires(&rs, &text("中方决定驱逐该国大使。")).is_some());
    assert!(fires(&rs, &text("游客被驱逐出大使馆门前广场。")).is_none());
}

/// The same span is no hold: a wildcard stretches `konsul*` over the whole word
/// "Konsulat", which `konsulat*` covers too, so the consulate is no envoy (the
/// consul still is).
#[test]
fn not_overlapping_drops_a_hit_of_the_same_span() {
    let lists = r#"
kind: lists
lists:
  envoy: { de: ["konsul*"], not_overlapping: [mission] }
  mission: { de: ["konsulat*"] }
  summon: { de: ["einbestellt"] }
"#;
    let rs = rules_with(
        lists,
        "when: { near: [{ list: summon }, { list: envoy }], within: 8 }",
    );
    assert!(fires(&rs, &text("Das Konsulat wurde einbestellt.")).is_none());
    assert!(fires(&rs, &text("Der Konsul wurde einbestellt.")).is_some());
}

#[test]
fn web_spans_find_urls_and_mail_but_not_mentions() {
    let spans = |t: &str| {
        let mut out = Vec::new();
        web_spans(t, 0, &mut out);
        out.iter()
            .map(|&(_, a, b)| t[a as usize..b as usize].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        spans("see https://a.example/x?y=1 and www.b.example/z."),
        ["https://a.example/x?y=1", "www.b.example/z."]
    );
    assert_eq!(
        spans("mail desk.one+x@mfa.example.org now"),
        ["desk.one+x@mfa.example.org"]
    );
    assert_eq!(spans("@mfa_russia @x.y and a@b"), Vec::<String>::new());
    assert_eq!(
        spans("邮箱sanctions@mfa.example"),
        ["sanctions@mfa.example"]
    );
    assert_eq!(spans("awww.example is no address"), Vec::<String>::new());
}

t!(
    evasion_via_normaliser,
    "when: { terms: [\"persona non grata\"] }",
    [
        "#PersonaNonGrata",
        "p e r s o n a  n o n  g r a t a",
        "PERSONA\u{200B} NON GRATA",
        "ｐｅｒｓｏｎａ ｎｏｎ ｇｒａｔａ"
    ],
    ["persona grata"]
);

#[test]
fn fields_scope_and_requires_media() {
    let rs = rules("requires_media: true\nfields: [media]\nwhen: { terms: [\"crosshairs\"] }");
    let with = r#"{"id":"1","text":"crosshairs","media":[{"type":"image","alt_text":"map with crosshairs"}]}"#;
    let text_only =
        r#"{"id":"1","text":"crosshairs","media":[{"type":"image","alt_text":"a map"}]}"#;
    let no_media = r#"{"id":"1","text":"crosshairs"}"#;
    let m = fires(&rs, with).expect("fires on alt text");
    assert_eq!(m.evidence[0].field, FieldRef::AltText(0));
    assert_eq!(m.evidence[0].matched, "crosshairs");
    assert!(fires(&rs, text_only).is_none(), "text is not searched");
    assert!(fires(&rs, no_media).is_none(), "requires media");
}

#[test]
fn quoted_text_is_context_by_default() {
    let rs = rules("when: { list: expel }");
    assert!(fires(
        &rs,
        r#"{"id":"1","text":"Indeed.","quoted_text":"we expel them"}"#
    )
    .is_none());
    let rs = rules("fields: [text, quoted_text]\nwhen: { list: expel }");
    assert!(fires(
        &rs,
        r#"{"id":"1","text":"Indeed.","quoted_text":"we expel them"}"#
    )
    .is_some());
}

#[test]
fn account_filters_let_missing_fields_pass_unless_strict() {
    let rs = rules("accounts: { roles: [foreign_ministry], not_countries: [CA], langs: [en] }\nwhen: { list: expel }");
    let p = |acc: &str, lang: &str| {
        format!(r#"{{"id":"1","text":"we expel","account":{acc},"lang":{lang}}}"#)
    };
    assert!(fires(
        &rs,
        &p(r#"{"role":"foreign_ministry","country":"SA"}"#, "\"en\"")
    )
    .is_some());
    assert!(
        fires(&rs, &p("{}", "null")).is_some(),
        "missing fields pass"
    );
    assert!(fires(&rs, &p(r#"{"role":"embassy"}"#, "null")).is_none());
    assert!(fires(&rs, &p(r#"{"country":"ca"}"#, "null")).is_none());
    assert!(fires(&rs, &p("{}", "\"fr\"")).is_none());
    assert!(fires(&rs, &p("{}", "\"en-GB\"")).is_some());
    let strict =
        rules("accounts: { roles: [foreign_ministry], strict: true }\nwhen: { list: expel }");
    assert!(
        fires(&strict, &p("{}", "null")).is_none(),
        "strict rejects missing"
    );
}

#[test]
fn handle_filters_ignore_at_and_case() {
    let rs = rules("accounts: { not_handles: [\"@ParodyMFA\"] }\nwhen: { list: expel }");
    assert!(fires(
        &rs,
        r#"{"id":"1","text":"we expel","account":{"handle":"parodymfa"}}"#
    )
    .is_none());
    assert!(fires(
        &rs,
        r#"{"id":"1","text":"we expel","account":{"handle":"RealMFA"}}"#
    )
    .is_some());
}

#[test]
fn targets_come_from_country_lists_without_the_actor() {
    let rs = rules("when: { list: expel }");
    let m = fires(
        &rs,
        r#"{"id":"1","text":"Riyadh will expel the Canadian ambassador; Ottawa objects.","account":{"country":"SA"}}"#,
    )
    .unwrap();
    assert_eq!(m.targets, ["CA"]);
    let m = fires(
        &rs,
        r#"{"id":"1","text":"Saudi Arabia will expel the Canadian envoy."}"#,
    )
    .unwrap();
    assert_eq!(m.targets, ["SA", "CA"], "first mention first");
}

#[test]
fn evidence_points_into_the_original_text() {
    let rs = rules("when: { near: [{ list: expel }, { list: envoy }], within: 5 }");
    let t = "Nous déclarons: les diplomates sont EXPULSÉS.";
    let m = fires(&rs, &text(t)).unwrap();
    for e in &m.evidence {
        assert_eq!(&t[e.start..e.end], e.matched);
    }
    let got: Vec<&str> = m.evidence.iter().map(|e| e.matched.as_str()).collect();
    assert_eq!(got, ["diplomates", "EXPULSÉS"]);
}

#[test]
fn disabled_rules_do_not_fire() {
    let rs = rules("enabled: false\nwhen: { list: expel }");
    assert!(fires(&rs, &text("we expel")).is_none());
}

#[test]
fn explain_reports_suppression() {
    let rs = rules("when: { list: expel }\nunless:\n  - any: [{ terms: [\"false\"] }]");
    let tr = explain(&rs, &text("Reports that we expel diplomats are false."));
    assert_eq!(tr.len(), 1);
    assert!(!tr[0].fired);
    assert_eq!(tr[0].suppressed_by.len(), 1);
    assert_eq!(tr[0].suppressed_by[0].1[0].matched, "false");
}

/// `foreign_country` ignores names of the posting account's own country; `country` does not.
#[test]
fn foreign_country_skips_the_posters_own_country() {
    let foreign = rules("when: { near: [{ list: expel }, { list: foreign_country }], within: 4 }");
    let any = rules("when: { near: [{ list: expel }, { list: country }], within: 4 }");
    let post = |t: &str, c: &str| {
        serde_json::json!({"id": "1", "text": t, "account": {"country": c}}).to_string()
    };
    let own = post("Canada expels two diplomats.", "CA");
    assert!(fires(&foreign, &own).is_none());
    assert!(fires(&any, &own).is_some());
    assert!(fires(&foreign, &post("Canada expels two diplomats.", "SA")).is_some());
    assert!(fires(&foreign, &text("Canada expels two diplomats.")).is_some());
    assert!(fires(&foreign, &post("Ottawa expels two Saudi diplomats.", "CA")).is_none());
}

/// Two suppressed matches of one exception are one line of `explain`, not two.
#[test]
fn explain_lists_each_suppression_once() {
    let rs =
        rules("when: { list: expel }\nunless:\n  - any: [{ terms: [\"false\"] }]\n    scope: post");
    let tr = explain(
        &rs,
        &text("Reports that we expel and will expel diplomats are false."),
    );
    assert_eq!(tr[0].suppressed_by.len(), 1, "{:?}", tr[0].suppressed_by);
}

#[test]
fn only_rules_whose_required_terms_hit_are_candidates() {
    // Two rules; a post hitting only one rule's terms evaluates only that rule.
    let rs = load_sources(&[Source {
        path: "r.yaml".into(),
        text: "category: c\nrules:\n  - {id: a, title: a, severity: low, when: {near: [{terms: [x1]}, {terms: [y1]}], within: 3}}\n  - {id: b, title: b, severity: low, when: {terms: [z1]}}\n".into(),
    }])
    .unwrap();
    let mut m = Matcher::new();
    let raw = text("x1 and z1");
    let post = decode(raw.as_bytes(), &Limits::default()).unwrap();
    let tr = m.explain(&rs, &post);
    let ids: Vec<&str> = tr.iter().map(|t| rs.rules[t.rule].id.as_str()).collect();
    assert_eq!(
        ids,
        ["b"],
        "rule a needs y1 too, so it is not even evaluated"
    );
}

#[test]
fn a_rule_whose_alternatives_all_need_two_sets_is_gated_on_both() {
    // any(all(x1, y1), all(x1, y2)): a post with x1 alone must not even evaluate it
    // (the gate is x1 ∧ (y1 ∨ y2)), and one with x1 and y2 must fire.
    let rs = load_sources(&[Source {
        path: "r.yaml".into(),
        text: "category: c\nrules:\n  - {id: a, title: a, severity: low, when: {any: [{all: [{terms: [x1]}, {terms: [y1]}]}, {all: [{terms: [x1]}, {terms: [y2]}]}]}}\n".into(),
    }])
    .unwrap();
    let mut m = Matcher::new();
    let raw = text("x1 alone");
    let post = decode(raw.as_bytes(), &Limits::default()).unwrap();
    assert!(
        m.explain(&rs, &post).is_empty(),
        "x1 alone: not a candidate"
    );
    let raw = text("x1 then y2");
    let post = decode(raw.as_bytes(), &Limits::default()).unwrap();
    let mut out = Vec::new();
    m.match_post(&rs, &post, &mut out);
    assert_eq!(out.len(), 1);
}

/// The trigger automaton is switched off while most posts pass it; that must never
/// change what fires. One long-lived matcher (which switches) against a fresh one
/// per post (which always runs the trigger), on a stream where most posts pass.
#[test]
fn switching_the_trigger_off_changes_no_result() {
    // Many exception terms, so that the trigger (the gate's terms) is a small part
    // of the automaton and gets built.
    let filler: Vec<String> = (0..60).map(|i| format!("\"filler{i}\"")).collect();
    let rs = rules(&format!(
        "when:\n  near: [{{ list: expel }}, {{ list: envoy }}]\n  within: 4\nunless: [{{ list: negation }}, {{ terms: [{}] }}]\n",
        filler.join(", ")
    ));
    assert!(rs.trigger.is_some(), "the test needs a trigger automaton");
    let texts = [
        "Canada will expel the Saudi ambassador",
        "we will not expel the ambassador",
        "the ambassador met students",
        "expel the diplomats now",
        "a routine post about trade",
    ];
    let mut long = Matcher::new();
    for i in 0..3 * TRIGGER_SAMPLE as usize + 100 {
        // Mostly posts that pass the trigger (an expel term), now and then one that
        // does not.
        let t = texts[if i % 7 == 6 { 2 + i % 3 } else { i % 2 * 3 }];
        let raw = text(t);
        let post = decode(raw.as_bytes(), &Limits::default()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        long.match_post(&rs, &post, &mut a);
        Matcher::new().match_post(&rs, &post, &mut b);
        let ev = |v: &Vec<RuleMatch>| -> Vec<Vec<String>> {
            v.iter()
                .map(|m| m.evidence.iter().map(|e| e.matched.clone()).collect())
                .collect()
        };
        assert_eq!(ev(&a), ev(&b), "post {i}: {t}");
    }
    assert!(
        !long.use_trigger,
        "most posts passed, so the trigger was switched off"
    );
}

/// Diagnostics carry file:line:column for every kind of mistake.
#[test]
fn check_reports_positions() {
    let cases: &[(&str, &str)] = &[
        ("rules:\n  - id: a\n    title: t\n    severty: high\n", "unknown field `severty`"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: high, when: {list: nope}}\n", "undefined list `nope`"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: high, when: {regex: \"(\"}}\n", "bad regex"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: high, when: {terms: [x]}}\n  - {id: a, title: t, severity: high, when: {terms: [y]}}\n", "duplicate rule id `a`"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: huge, when: {terms: [x]}}\n", "unknown severity"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: low, when: {none: [{terms: [x]}]}}\n", "without any term"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: low, when: {near: [{terms: [x]}, {terms: [y]}]}}\n", "needs `within"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: low, when: {regex: \"x{1000}{1000}\"}}\n", "too large"),
        ("rules: [\n", ""),
        ("kind: accounts\nrules:\n  - {id: a, title: t, severity: low, when: {terms: [x]}}\n", "an accounts file cannot define rules"),
        ("category: c\nrules:\n  - {id: a, title: t, severity: low, when: {terms: [x]}}\n  - {id: b, title: t, severity: low, when: {terms: [y]}, extra: 1}\n", "unknown field `extra`"),
        ("category: c\nrules: {a: 1}\n", "sequence"),
    ];
    for (yaml, want) in cases {
        let err = load_sources(&[Source {
            path: "bad.yaml".into(),
            text: (*yaml).into(),
        }])
        .unwrap_err();
        let d = &err.diagnostics()[0];
        assert!(d.line > 0 && d.column > 0, "{yaml:?} → {d}");
        assert!(d.to_string().starts_with("bad.yaml:"), "{d}");
        assert!(d.message.contains(want), "{yaml:?}: want {want:?}, got {d}");
    }
}

/// Rules are read one at a time after the lists (see `format::for_each_rule`):
/// anchors defined anywhere in the file, merge keys and a later rule's error still
/// work as when the file was read whole.
#[test]
fn streamed_rules_see_anchors_and_keep_order() {
    let yaml = "category: c\nlists:\n  l:\n    en: &w [expel, expels]\nrules:\n  - {id: r1, title: t, severity: low, when: {terms: *w}}\n  - &base {id: r2, title: t, severity: low, when: {term: recall}}\n  - {<<: *base, id: r3}\n";
    let rs = load_sources(&[Source {
        path: "a.yaml".into(),
        text: yaml.into(),
    }])
    .unwrap();
    let ids: Vec<&str> = rs.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert_eq!(rs.files[0].rules, 3);
    let out = matches(&rs, &text("they expels and recall"));
    assert_eq!(out.len(), 3, "{out:?}");
}

mod properties {
    //! The matcher against a naive reference: split into words, look for the terms.
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "expel", "envoy", "not", "the", "sanction", "ab", "xy", "expelled",
    ];
    const SEPS: &[&str] = &[" ", "  ", ", ", ". ", "\n", "-", " ("];

    fn post_text() -> impl Strategy<Value = String> {
        prop::collection::vec((0..WORDS.len(), 0..SEPS.len()), 0..14).prop_map(|v| {
            let body: String = v
                .into_iter()
                .map(|(w, s)| format!("{}{}", WORDS[w], SEPS[s]))
                .collect();
            format!("q {body}")
        })
    }

    /// (word, sentence) pairs, the way a person would read the text.
    fn naive_tokens(t: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut sentence = 0;
        let mut word = String::new();
        let chars: Vec<char> = t.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c.is_alphanumeric() {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                out.push((std::mem::take(&mut word), sentence));
            }
            let next_space = chars.get(i + 1).is_none_or(|n| *n == ' ' || *n == '\n');
            if c == '\n'
                || (c == '.'
                    && next_space
                    && out.last().is_some_and(|(w, _)| w.chars().count() != 1))
            {
                sentence += 1;
            }
        }
        if !word.is_empty() {
            out.push((word, sentence));
        }
        out
    }

    fn single_rule(when: &str) -> RuleSet {
        load_sources(&[Source {
            path: "p.yaml".into(),
            text: format!(
                "category: c\nrules:\n  - {{id: p, title: p, severity: low, when: {when}}}\n"
            ),
        }])
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn term_matches_whole_words_only(t in post_text(), w in 0..WORDS.len()) {
            let rs = single_rule(&format!("{{terms: [\"{}\"]}}", WORDS[w]));
            let want = naive_tokens(&t).iter().any(|(x, _)| x == WORDS[w]);
            prop_assert_eq!(fires(&rs, &text(&t)).is_some(), want, "{:?}", t);
        }

        #[test]
        fn prefix_term_matches_word_starts(t in post_text(), w in 0..WORDS.len()) {
            let rs = single_rule(&format!("{{terms: [\"{}*\"]}}", WORDS[w]));
            let want = naive_tokens(&t).iter().any(|(x, _)| x.starts_with(WORDS[w]));
            prop_assert_eq!(fires(&rs, &text(&t)).is_some(), want, "{:?}", t);
        }

        #[test]
        fn near_agrees_with_naive_windows(t in post_text(), a in 0..WORDS.len(), b in 0..WORDS.len(), n in 0u32..4) {
            let rs = single_rule(&format!("{{near: [{{terms: [\"{}\"]}}, {{terms: [\"{}\"]}}], within: {n}}}", WORDS[a], WORDS[b]));
            let toks = naive_tokens(&t);
            let mut want = false;
            for (i, (x, si)) in toks.iter().enumerate() {
                for (j, (y, sj)) in toks.iter().enumerate() {
                    let between = (i.max(j) as i64) - (i.min(j) as i64) - 1;
                    if i != j && x == WORDS[a] && y == WORDS[b] && si == sj && between <= n as i64 {
                        want = true;
                    }
                }
            }
            prop_assert_eq!(fires(&rs, &text(&t)).is_some(), want, "{:?}", t);
        }

        #[test]
        fn evidence_always_points_into_the_original(t in "\\PC{0,60}", w in 0..WORDS.len()) {
            let rs = single_rule(&format!("{{terms: [\"{}*\"]}}", WORDS[w]));
            let s = format!("{t} {} {t}", WORDS[w].to_uppercase());
            if let Some(m) = fires(&rs, &text(&s)) {
                for e in m.evidence {
                    prop_assert!(s.is_char_boundary(e.start) && s.is_char_boundary(e.end));
                    prop_assert_eq!(&s[e.start..e.end], e.matched.as_str());
                }
            }
        }
    }
}
