//! Machine-readable results of `cargo xtask test` for CI systems: TAP
//! version 13 (one `ok`/`not ok` line per result, like kvm-unit-tests'
//! `run_tests.sh -t`) and JUnit XML (one `<testsuite>` per run, one
//! `<testcase>` per result). Pure functions of the runs; the caller decides
//! where the text goes.

use crate::test_cmd::{Item, Row};
use std::fmt::Write;

/// The output format of `cargo xtask test`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable progress, blocks and the closing table (stdout).
    #[default]
    Text,
    /// TAP version 13 on stdout (the human-readable output goes to stderr).
    Tap,
    /// A JUnit XML file (`--output`, default `<target>/quadrant/junit.xml`).
    Junit,
}

/// One line of text made safe for a TAP description or YAML scalar.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// TAP version 13: the plan, then one line per result of every run.
/// A skip is `ok N - ... # SKIP why`; a failure carries its detail as a
/// YAML block.
pub fn tap(rows: &[Row]) -> String {
    let n: usize = rows.iter().map(|r| r.items.len()).sum();
    let mut s = format!("TAP version 13\n1..{n}\n");
    let mut i = 0;
    for r in rows {
        for it in &r.items {
            i += 1;
            // `#` starts a directive in TAP: keep it out of descriptions.
            let desc = one_line(&format!("{}: {}", r.name, it.name)).replace('#', "%23");
            match it.outcome {
                "pass" => {
                    let _ = writeln!(s, "ok {i} - {desc}");
                }
                "skip" => {
                    let _ = writeln!(s, "ok {i} - {desc} # SKIP {}", one_line(&it.detail));
                }
                _ => {
                    let _ = writeln!(s, "not ok {i} - {desc}");
                    let _ = writeln!(s, "  ---\n  message: {:?}\n  ...", one_line(&it.detail));
                }
            }
        }
    }
    s
}

/// XML character data / attribute value escaping.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}

fn count(items: &[Item], outcome: &str) -> usize {
    items.iter().filter(|i| i.outcome == outcome).count()
}

/// JUnit XML: `<testsuites>` with one `<testsuite>` per run.
pub fn junit(rows: &[Row]) -> String {
    let all: Vec<&Item> = rows.iter().flat_map(|r| &r.items).collect();
    let fails = all.iter().filter(|i| i.outcome == "fail").count();
    let secs: f64 = rows.iter().map(|r| r.secs).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"quadrant\" tests=\"{}\" failures=\"{fails}\" time=\"{secs:.3}\">",
        all.len()
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            xml(&r.name),
            r.items.len(),
            count(&r.items, "fail"),
            count(&r.items, "skip"),
            r.secs
        );
        for it in &r.items {
            let head = format!("    <testcase classname=\"{}\" name=\"{}\"", xml(&r.name), xml(&it.name));
            match it.outcome {
                "pass" => {
                    let _ = writeln!(s, "{head}/>");
                }
                "skip" => {
                    let _ = writeln!(s, "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>", xml(&it.detail));
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "{head}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml(&one_line(&it.detail)),
                        xml(&it.detail)
                    );
                }
            }
        }
        let _ = writeln!(s, "  </testsuite>");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        let it = |name: &str, outcome: &'static str, detail: &str| Item {
            name: name.into(),
            outcome,
            detail: detail.into(),
        };
        vec![
            Row::for_test("host tests (cargo test)", vec![it("shared: line::tests::a", "pass", "")]),
            Row::for_test(
                "hypervisor, bochs penryn (shadow)",
                vec![
                    it("boot/handoff", "pass", "eax=0x2badb002"),
                    it("cache/flood", "skip", "needs the hypervisor"),
                    it("long/x#1", "fail", "expected <1> & got \"2\"\nnext"),
                ],
            ),
        ]
    }

    #[test]
    fn tap_is_version_13_with_a_plan_and_one_line_per_result() {
        let t = tap(&rows());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "TAP version 13");
        assert_eq!(lines[1], "1..4");
        assert_eq!(lines[2], "ok 1 - host tests (cargo test): shared: line::tests::a");
        assert_eq!(lines[3], "ok 2 - hypervisor, bochs penryn (shadow): boot/handoff");
        assert_eq!(lines[4], "ok 3 - hypervisor, bochs penryn (shadow): cache/flood # SKIP needs the hypervisor");
        assert_eq!(lines[5], "not ok 4 - hypervisor, bochs penryn (shadow): long/x%231");
        assert_eq!(lines[6], "  ---");
        assert_eq!(lines[7], "  message: \"expected <1> & got \\\"2\\\" next\"");
        assert_eq!(lines[8], "  ...");
        assert_eq!(lines.len(), 9);
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = junit(&rows());
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"quadrant\" tests=\"4\" failures=\"1\""));
        assert!(x.contains("<testsuite name=\"hypervisor, bochs penryn (shadow)\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert!(x.contains("<testcase classname=\"hypervisor, bochs penryn (shadow)\" name=\"boot/handoff\"/>"));
        assert!(x.contains("<skipped message=\"needs the hypervisor\"/>"));
        assert!(x.contains("<failure message=\"expected &lt;1&gt; &amp; got &quot;2&quot; next\">expected &lt;1&gt; &amp; got &quot;2&quot;\nnext</failure>"));
        assert!(x.ends_with("</testsuites>\n"));
        // Balanced elements.
        assert_eq!(x.matches("<testsuite ").count(), x.matches("</testsuite>").count());
        assert_eq!(x.matches("<testcase ").count(), 4);
    }
}
