//! The listing page in a real browser (headless Chromium, when the machine has it; `.ci/run`
//! installs Debian's `chromium`): on a 390 px phone screen no column is pushed off by a long
//! name and nothing scrolls sideways, and it follows the system's dark mode.
//!
//! Chromium loads a small page served from the same directory that frames the listing at
//! phone width and writes what it measured into its own DOM, which `--dump-dom` prints.

mod common;

use std::io;
use std::process::Command;

use common::{Addr, Server};
use tempfile::tempdir;

/// The browser, when there is one.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        eprintln!("skipped: no headless Chromium here (Debian package chromium)");
    }
    found
}

const PROBE: &str = r#"<!DOCTYPE html><html><body>
<iframe id="f" src="/" style="width:390px;height:700px;border:0"></iframe>
<pre id="out">pending</pre>
<script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument, w = this.contentWindow, right = 0;
  d.querySelectorAll('td, th').forEach(function (c) {
    right = Math.max(right, c.getBoundingClientRect().right);
  });
  document.getElementById('out').textContent = 'MEASURED width=' + d.documentElement.clientWidth +
    ' right=' + Math.ceil(right) + ' scroll=' + d.documentElement.scrollWidth +
    ' rows=' + d.querySelectorAll('tbody tr').length +
    ' bg=' + w.getComputedStyle(d.body).backgroundColor.replace(/ /g, '') + ' END';
};
</script></body></html>"#;

/// What the probe measured, as `key=value` pairs.
fn measure(browser: &str, addr: &Addr, dark: bool) -> io::Result<Vec<(String, String)>> {
    let Addr::Tcp(addr) = addr else {
        return Err(common::other("expected a TCP listener"));
    };
    let mut command = Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]);
    if dark {
        command.arg("--force-dark-mode");
    }
    let out = command.arg(format!("http://{addr}/probe.html")).output()?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let found = dom
        .split("MEASURED ")
        .nth(1)
        .and_then(|rest| rest.split(" END").next())
        .ok_or_else(|| common::other(format!("the probe measured nothing: {dom}")))?;
    Ok(found
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn value<'a>(measured: &'a [(String, String)], key: &str) -> &'a str {
    measured
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn the_listing_fits_a_phone_and_follows_dark_mode() -> io::Result<()> {
    let Some(browser) = chromium() else {
        return Ok(());
    };
    let site = tempdir()?;
    let r = site.path();
    std::fs::write(r.join("probe.html"), PROBE)?;
    std::fs::write(
        r.join("an-extremely-long-file-name-without-any-space-that-would-push-every-column-off-a-phone.tar.gz"),
        vec![0u8; 5000],
    )?;
    std::fs::write(
        r.join("a file with a long name made of many words that go on and on.txt"),
        "x",
    )?;
    std::fs::create_dir(r.join("a-very-long-directory-name-that-keeps-going-and-going"))?;
    let dir = r.to_str().expect("UTF-8 temp path");
    let server = Server::start(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--quiet",
    ])?;
    let light = measure(browser, &server.addrs[0], false)?;
    let width: u32 = value(&light, "width").parse().unwrap_or(0);
    let right: u32 = value(&light, "right").parse().unwrap_or(u32::MAX);
    let scroll: u32 = value(&light, "scroll").parse().unwrap_or(u32::MAX);
    assert_eq!(width, 390, "{light:?}");
    assert!(
        right <= width,
        "a column is pushed off the screen: {light:?}"
    );
    assert_eq!(scroll, width, "the page scrolls sideways: {light:?}");
    assert_eq!(value(&light, "rows"), "4", "{light:?}");
    assert_eq!(value(&light, "bg"), "rgb(255,255,255)", "{light:?}");
    let dark = measure(browser, &server.addrs[0], true)?;
    assert_ne!(
        value(&dark, "bg"),
        "rgb(255,255,255)",
        "dark mode: {dark:?}"
    );
    assert!(value(&dark, "bg").starts_with("rgb("), "{dark:?}");
    Ok(())
}
