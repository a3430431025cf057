//! What a matrix run prints: one line per target as it ends, a summary, and JUnit XML
//! (quick-junit) for CI dashboards.
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::run::{TargetResult, Verdict};

/// `VERDICT  NAME  DURATION  why; console: PATH`, the name padded to `width`.
pub fn line(r: &TargetResult, width: usize) -> String {
    let mut s = format!(
        "{:<7}  {:<width$}  {:>7.1} s",
        r.verdict.as_str(),
        r.name,
        r.duration.as_secs_f64()
    );
    if !r.message.is_empty() {
        s.push_str("  ");
        s.push_str(&r.message);
    }
    if let Some(c) = &r.console {
        s.push_str(&format!("; console: {}", c.display()));
    }
    s
}

/// Every target's line, then `N targets: 1 passed, 2 failed, ... in T s`.
pub fn summary(results: &[TargetResult], wall: Duration) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for r in results {
        s.push_str(&line(r, width));
        s.push('\n');
    }
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    let parts: Vec<String> = [
        (Verdict::Pass, "passed"),
        (Verdict::Fail, "failed"),
        (Verdict::Timeout, "timed out"),
        (Verdict::Panic, "panicked"),
        (Verdict::Error, "could not run"),
        (Verdict::Skipped, "skipped"),
    ]
    .iter()
    .filter(|(v, _)| count(*v) > 0)
    .map(|(v, what)| format!("{} {what}", count(*v)))
    .collect();
    s.push_str(&format!(
        "{} target{}: {} in {:.1} s\n",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        parts.join(", "),
        wall.as_secs_f64()
    ));
    s
}

/// True when every target passed.
pub fn all_passed(results: &[TargetResult]) -> bool {
    results.iter().all(|r| r.verdict == Verdict::Pass)
}

/// JUnit XML: one test suite (`suite`, e.g. the file's name), one test case per target.
/// FAIL and TIMEOUT are failures, PANIC and ERROR errors (the `type` attribute says which);
/// the command's output is the case's system-out, the console's last lines the failure's text.
pub fn junit(suite: &str, results: &[TargetResult], wall: Duration) -> String {
    let mut ts = TestSuite::new(suite);
    ts.set_time(wall);
    for r in results {
        let status = match r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.message.as_str());
                s
            }
            v => {
                let kind = match v {
                    Verdict::Fail | Verdict::Timeout => NonSuccessKind::Failure,
                    _ => NonSuccessKind::Error,
                };
                let mut s = TestCaseStatus::non_success(kind);
                s.set_message(r.message.as_str()).set_type(v.as_str());
                if !r.console_tail.is_empty() {
                    s.set_description(r.console_tail.as_str());
                }
                s
            }
        };
        let mut tc = TestCase::new(r.name.as_str(), status);
        tc.set_classname(suite).set_time(r.duration);
        tc.add_property(Property::new("lab", r.lab.as_str()));
        tc.add_property(Property::new(
            "kernel",
            r.kernel.display().to_string().as_str(),
        ));
        if let Some(rc) = r.rc {
            tc.add_property(Property::new("exit-status", rc.to_string().as_str()));
        }
        if let Some(c) = &r.console {
            tc.add_property(Property::new("console", c.display().to_string().as_str()));
        }
        if !r.output.is_empty() {
            tc.set_system_out_lossy(r.output.as_bytes());
        }
        ts.add_test_case(tc);
    }
    let mut rep = Report::new("labnet test");
    rep.set_time(wall);
    rep.add_test_suite(ts);
    // Serializing an in-memory report into a String cannot fail.
    rep.to_string().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn result(name: &str, verdict: Verdict, secs: u64, rc: Option<i32>, msg: &str) -> TargetResult {
        let failed = verdict != Verdict::Pass && verdict != Verdict::Skipped;
        TargetResult {
            name: name.into(),
            lab: "lm1".into(),
            kernel: "/k/bzImage".into(),
            verdict,
            duration: Duration::from_millis(secs * 1000 + 250),
            rc,
            message: msg.into(),
            console_tail: if failed {
                format!("[    1.0] {name} console")
            } else {
                String::new()
            },
            output: if verdict == Verdict::Skipped {
                String::new()
            } else {
                format!("{name} says <hi> & bye\n")
            },
            console: failed.then(|| PathBuf::from(format!("logs/{name}.console.log"))),
        }
    }

    fn results() -> Vec<TargetResult> {
        vec![
            result("pass", Verdict::Pass, 12, Some(0), ""),
            result("fail", Verdict::Fail, 8, Some(3), "exit status 3"),
            result(
                "hang-forever",
                Verdict::Timeout,
                30,
                None,
                "timed out after 30 s while the command ran",
            ),
            result(
                "panic",
                Verdict::Panic,
                5,
                None,
                "Kernel panic - not syncing: sysrq triggered crash",
            ),
            result("later", Verdict::Skipped, 0, None, "not run: interrupted"),
        ]
    }

    #[test]
    fn summary_golden() {
        let s = summary(&results(), Duration::from_millis(45_600));
        testkit::check_golden(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/summary.txt"),
            &s,
        );
        assert!(!all_passed(&results()));
        assert!(all_passed(&results()[..1]));
    }

    #[test]
    fn junit_golden_and_parses_back() {
        let x = junit("matrix.toml", &results(), Duration::from_millis(45_600));
        testkit::check_golden(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/junit.xml"),
            &x,
        );
        // The crate's own parser reads it back: the counts and each case's kind.
        let back = Report::deserialize_from_str(&x).unwrap();
        assert_eq!(
            (back.tests, back.failures, back.errors, back.skipped),
            (5, 2, 1, 1)
        );
        let cases = &back.test_suites[0].test_cases;
        let kinds: Vec<String> = cases
            .iter()
            .map(|c| match &c.status {
                TestCaseStatus::Success { .. } => "success".to_string(),
                TestCaseStatus::NonSuccess { kind, ty, .. } => {
                    format!("{kind:?}:{}", ty.as_ref().map_or("", |t| t.as_str()))
                }
                TestCaseStatus::Skipped { .. } => "skipped".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "success",
                "Failure:FAIL",
                "Failure:TIMEOUT",
                "Error:PANIC",
                "skipped"
            ]
        );
        assert_eq!(
            cases[0].system_out.as_ref().map(|s| s.as_str()),
            Some("pass says <hi> & bye")
        );
    }
}
