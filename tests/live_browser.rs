//! The live view in real headless Chromium, driven by Playwright (`tests/browser/live.mjs`)
//! against `rawlink demo --source sim:scene` on 127.0.0.1.
//!
//! Needs Node.js, `npm ci` in `tests/browser` and Debian's `chromium` (`.ci/run` installs
//! them). Without them the test says so and passes, unless `RAWLINK_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), when their absence fails it. Screenshots go to
//! `$RAWLINK_ARTIFACTS/live-view` (default `target/artifacts/live-view`); the test prints
//! the folder.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn missing_tools(browser_dir: &Path, chromium: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".to_string());
    }
    if !browser_dir.join("node_modules/playwright-core").is_dir() {
        missing.push(format!(
            "playwright-core (run `npm ci` in {})",
            browser_dir.display()
        ));
    }
    if !Path::new(chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    missing
}

#[test]
fn live_view_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = missing_tools(&browser_dir, &chromium);
    if !missing.is_empty() {
        let msg = format!("browser test needs: {}", missing.join(", "));
        assert!(
            std::env::var_os("RAWLINK_REQUIRE_BROWSER").is_none(),
            "{msg} (RAWLINK_REQUIRE_BROWSER is set)"
        );
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let artifacts = std::env::var_os("RAWLINK_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/artifacts"))
        .join("live-view");
    let _ = std::fs::remove_dir_all(&artifacts);
    let out = tempfile::tempdir().unwrap();
    let (mut demo, addr) = live_demo(out.path());
    let url = format!("http://{addr}/");
    let run = Command::new("node")
        .arg(browser_dir.join("live.mjs"))
        .arg(&url)
        .arg(&artifacts)
        .current_dir(&browser_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let _ = demo.kill();
    let _ = wait_timeout(&mut demo, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    println!(
        "browser screenshots (CI artifacts): {}",
        artifacts.display()
    );
    assert!(
        run.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all ") && stdout.contains("browser checks passed"),
        "{stdout}"
    );
    for shot in [
        "live-1.png",
        "live-2.png",
        "live-tone-off.png",
        "live-view.png",
        "download.png",
    ] {
        let p = artifacts.join(shot);
        let (w, h, _, _) = read_png(&p);
        assert!(w > 0 && h > 0, "{}", p.display());
    }
}
