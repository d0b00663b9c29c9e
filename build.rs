//! Embeds the default rules (rules/) and the bundled sample streams (samples/) into the
//! binary, so `attache run` works from any directory.
use std::path::{Path, PathBuf};

fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(&p, exts, out);
        } else if exts.iter().any(|x| name.ends_with(x)) {
            out.push(p);
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=rules");
    println!("cargo:rerun-if-changed=samples");
    let mut code = String::new();
    for (name, dir, exts) in [
        ("RULES", "rules", &[".yaml", ".yml"][..]),
        ("SAMPLES", "samples", &[".jsonl"][..]),
    ] {
        let mut files = Vec::new();
        walk(&root.join(dir), exts, &mut files);
        files.sort();
        code.push_str(&format!("/// Files embedded from `{dir}/`: (path relative to the crate, content).\npub static {name}: &[(&str, &str)] = &[\n"));
        for f in files {
            let rel = f
                .strip_prefix(&root)
                .unwrap_or(&f)
                .to_string_lossy()
                .replace('\\', "/");
            code.push_str(&format!(
                "    ({rel:?}, include_str!({:?})),\n",
                f.to_string_lossy()
            ));
        }
        code.push_str("];\n");
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded.rs");
    std::fs::write(out, code).expect("write embedded.rs");
}
