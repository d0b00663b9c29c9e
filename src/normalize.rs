//! TEMPORARY STUB (replaced by the real normaliser)
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    text: String,
    map: Vec<(usize, usize)>,
}
impl Normalized {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn original_range(&self, start: usize, end: usize) -> std::ops::Range<usize> {
        let s = self.map.get(start).map(|m| m.0).unwrap_or(0);
        let e = if end == 0 {
            s
        } else {
            self.map.get(end - 1).map(|m| m.1).unwrap_or(s)
        };
        s..e
    }
}
pub fn normalize_into(input: &str, out: &mut Normalized) {
    out.text.clear();
    out.map.clear();
    for (i, c) in input.char_indices() {
        for l in c.to_lowercase() {
            let before = out.text.len();
            out.text.push(l);
            for _ in before..out.text.len() {
                out.map.push((i, i + c.len_utf8()));
            }
        }
    }
}
pub fn normalize(input: &str) -> Normalized {
    let mut n = Normalized::new();
    normalize_into(input, &mut n);
    n
}
