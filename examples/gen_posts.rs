//! Seeded generator of a realistic stream of official-account posts (JSON lines), for
//! benchmarks: `cargo run --release --example gen_posts -- N [SEED] > posts.jsonl`.
//!
//! About 1% of posts are escalation-like; the rest are routine diplomacy in several
//! languages, many sharing vocabulary with the rule sets (ambassador, sanctions relief,
//! embassy, tower, plane). Same N and seed, same bytes.

use std::io::{BufWriter, Write};

const COUNTRIES: &[(&str, &str)] = &[
    ("SA", "Saudi Arabia"),
    ("CA", "Canada"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("RU", "Russia"),
    ("CN", "China"),
    ("US", "the United States"),
    ("GB", "the United Kingdom"),
    ("IR", "Iran"),
    ("TR", "Türkiye"),
    ("BR", "Brazil"),
    ("IN", "India"),
    ("PK", "Pakistan"),
    ("JP", "Japan"),
    ("KR", "South Korea"),
    ("MX", "Mexico"),
    ("AR", "Argentina"),
    ("ES", "Spain"),
    ("IT", "Italy"),
    ("NG", "Nigeria"),
    ("ZA", "South Africa"),
    ("EG", "Egypt"),
    ("AU", "Australia"),
    ("ID", "Indonesia"),
    ("UA", "Ukraine"),
    ("PL", "Poland"),
    ("SE", "Sweden"),
    ("NO", "Norway"),
];
const ROLES: &[&str] = &[
    "foreign_ministry",
    "embassy",
    "head_of_state",
    "head_of_government",
    "minister",
    "spokesperson",
    "mission_to_un",
];
const ROUTINE: &[&str] = &[
    "Today Minister {a} met the Ambassador of {t} to discuss trade, energy and people-to-people ties. Productive exchange! #Diplomacy",
    "Our deepest condolences to the people of {t} after the devastating floods. We stand ready to help. 🙏",
    "Happy National Day to our friends in {t}! 🎉 Looking forward to another year of partnership.",
    "The Ambassador presented her credentials to the President of {t} today at the presidential palace.",
    "Great to welcome a trade delegation from {t}: 40 companies, new investments in renewable energy and agriculture.",
    "Joint statement: {a} and {t} agree to expand cooperation on climate, health and education. Full text: https://example.org/js",
    "We welcome the decision to ease sanctions relief procedures for humanitarian goods to {t}.",
    "Visa applications for students travelling to {t} are now processed online. Apply at https://example.org/visa",
    "Inaugural direct flight between our capital and {t} landed this morning ✈️ A new bridge between our peoples.",
    "Fireworks over the tower tonight to celebrate our friendship with {t}! 🎆",
    "The Embassy will be closed on Monday for the public holiday. Consular emergencies: call +1 555 0100.",
    "Minister {a} attends the G20 meeting of foreign ministers. Multilateralism matters more than ever.",
    "Thread 1/3: Our development aid to {t} reached a record level this year, supporting 2 million children.",
    "Football: congratulations to {t} on reaching the final! The player expelled in the 80th minute will miss it.",
    "Le ministre s'est entretenu avec son homologue de {t} sur la coopération économique et culturelle.",
    "El Embajador visitó hoy la feria del libro en {t}. ¡La cultura nos une! 📚",
    "Министр провёл переговоры с послом {t} по вопросам торгово-экономического сотрудничества.",
    "وزير الخارجية يستقبل سفير {t} لبحث سبل تعزيز العلاقات الثنائية",
    "外交部长会见{t}驻华大使，双方就双边关系和共同关心的问题交换意见。",
    "Der Botschafter besuchte heute die Universität und sprach über die Partnerschaft mit {t}.",
];
const ESCALATION: &[&str] = &[
    "We consider the ambassador of {t} persona non grata and order him to leave within 24 hours.",
    "Today we imposed sanctions on 12 officials of {t} responsible for the crackdown, including asset freezes and travel bans.",
    "The ambassador of {t} was summoned to the Ministry to receive a strong protest.",
    "We are recalling our ambassador to {t} for consultations with immediate effect.",
    "Le gouvernement a décidé d'expulser quatre diplomates de {t}, déclarés persona non grata.",
    "Rusia ha decidido imponer sanciones contra funcionarios de {t} en respuesta a las medidas hostiles.",
];
const MEDIA_ROUTINE: &[&str] = &[
    "Minister shaking hands with the ambassador at the ministry",
    "A plane of the national airline at the new terminal",
    "Children planting trees with embassy staff",
];
const MEDIA_ESCALATION: &str = "An airliner flying toward the city's tower with the words: he who interferes finds what does not please him";

/// xorshift64*: tiny, seeded, good enough for a benchmark stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let out = std::io::stdout();
    let mut w = BufWriter::with_capacity(1 << 20, out.lock());
    for i in 0..n {
        let a = COUNTRIES[rng.below(COUNTRIES.len())];
        let t = COUNTRIES[rng.below(COUNTRIES.len())];
        let esc = rng.unit() < 0.01;
        let tpl = if esc {
            ESCALATION[rng.below(ESCALATION.len())]
        } else {
            ROUTINE[rng.below(ROUTINE.len())]
        };
        let text = tpl.replace("{a}", a.1).replace("{t}", t.1);
        let id = 1_000_000_000_000_000u64 + i;
        let mut post = serde_json::json!({
            "id": id.to_string(), "platform": "x",
            "account": {"handle": format!("MFA_{}_{}", a.0, 1 + rng.below(40)), "name": format!("Foreign Ministry of {}", a.1),
                        "country": a.0, "role": ROLES[rng.below(ROLES.len())]},
            "created_at": format!("2026-0{}-{}T{}:{}:00Z", 1 + rng.below(9), 10 + rng.below(19), 10 + rng.below(14), 10 + rng.below(50)),
            "lang": "en", "text": text, "url": format!("https://x.com/i/status/{id}"),
        });
        let r = rng.unit();
        if esc && r < 0.2 {
            post["media"] = serde_json::json!([{"type": "image", "caption": MEDIA_ESCALATION}]);
        } else if r < 0.15 {
            post["media"] = serde_json::json!([{"type": "image", "caption": MEDIA_ROUTINE[rng.below(MEDIA_ROUTINE.len())]}]);
        }
        if serde_json::to_writer(&mut w, &post).is_err() || w.write_all(b"\n").is_err() {
            return; // closed pipe
        }
    }
    let _ = w.flush();
}
