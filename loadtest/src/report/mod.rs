//! Results: the human summary, `--json`, `--fail-if` thresholds and the
//! `--report DIR` Markdown + SVG report.

pub mod plot;

use std::collections::BTreeMap;
use std::path::Path;

/// A series of `(x, y)` points with a name.
pub type Series = (String, Vec<(f64, f64)>);

/// A plot for the report.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name without extension.
    pub file: String,
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Logarithmic x axis (latency CDFs).
    pub log_x: bool,
}

/// Everything a scenario produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: &'static str,
    /// The `--json` document.
    pub json: serde_json::Value,
    /// The human summary.
    pub human: String,
    /// Flat numbers `--fail-if` can test (latencies in ms, loss as a ratio).
    pub metrics: BTreeMap<String, f64>,
    /// Plots for the report.
    pub plots: Vec<Plot>,
    /// Warnings (harness saturated, failures…), also in the JSON.
    pub warnings: Vec<String>,
}

/// A parsed `--fail-if` threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Metric name.
    pub metric: String,
    /// Comparison.
    pub op: &'static str,
    /// Limit, in the metric's unit.
    pub value: f64,
    /// As written.
    pub text: String,
}

impl Threshold {
    /// Parses `p99>50ms`, `loss>0`, `loss>=0.1%`, `failed>0`, `connect_p99>1s`.
    pub fn parse(s: &str) -> Result<Threshold, String> {
        let t = s.trim();
        let (i, op) = [">=", "<=", ">", "<"]
            .iter()
            .find_map(|op| t.find(op).map(|i| (i, *op)))
            .ok_or_else(|| format!("--fail-if {s:?}: expected METRIC>VALUE, e.g. p99>50ms"))?;
        let metric = t[..i].trim().to_ascii_lowercase();
        let raw = t[i + op.len()..].trim();
        if metric.is_empty() || raw.is_empty() {
            return Err(format!("--fail-if {s:?}: expected METRIC>VALUE"));
        }
        let latency = metric.starts_with('p') || metric.ends_with("_p99") || metric == "max";
        let value = if let Some(p) = raw.strip_suffix('%') {
            p.trim().parse::<f64>().map(|v| v / 100.0).ok()
        } else if latency {
            crate::cli::parse_ms(raw).ok()
        } else {
            raw.parse::<f64>().ok()
        }
        .ok_or_else(|| format!("--fail-if {s:?}: {raw:?} is not a number"))?;
        Ok(Threshold {
            metric,
            op,
            value,
            text: t.to_string(),
        })
    }

    /// `Some(message)` when crossed; an unknown metric is an error.
    pub fn check(&self, metrics: &BTreeMap<String, f64>) -> Result<Option<String>, String> {
        let Some(&v) = metrics.get(&self.metric) else {
            return Err(format!(
                "--fail-if {}: this scenario has no metric {:?} (it has: {})",
                self.text,
                self.metric,
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let crossed = match self.op {
            ">" => v > self.value,
            ">=" => v >= self.value,
            "<" => v < self.value,
            _ => v <= self.value,
        };
        Ok(crossed.then(|| format!("threshold crossed: {} (measured {v})", self.text)))
    }
}

/// Writes `report.md`, `result.json` and the SVG plots into `dir`.
pub fn write_dir(dir: &Path, o: &Outcome, command: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--report {}: {e}", dir.display()))?;
    let mut md = format!(
        "# ringcast-load {} report\n\n```\n{command}\n```\n\n",
        o.scenario
    );
    if !o.warnings.is_empty() {
        md.push_str("## Warnings\n\n");
        for w in &o.warnings {
            md.push_str(&format!("- {w}\n"));
        }
        md.push('\n');
    }
    md.push_str("## Summary\n\n```\n");
    md.push_str(&o.human);
    md.push_str("```\n\n");
    for p in &o.plots {
        let file = format!("{}.svg", p.file);
        plot::svg(&dir.join(&file), p)?;
        md.push_str(&format!("## {}\n\n![{}]({file})\n\n", p.title, p.title));
    }
    md.push_str("## Raw result\n\nSee `result.json`.\n");
    std::fs::write(dir.join("report.md"), md).map_err(|e| format!("--report: {e}"))?;
    let json = serde_json::to_string_pretty(&o.json).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("result.json"), json).map_err(|e| format!("--report: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let m: BTreeMap<String, f64> = [
            ("p99".to_string(), 60.0),
            ("loss".to_string(), 0.001),
            ("failed".to_string(), 0.0),
        ]
        .into();
        let t = Threshold::parse("p99>50ms").unwrap();
        assert_eq!(t.value, 50.0);
        assert!(t.check(&m).unwrap().is_some());
        assert!(Threshold::parse("p99>1s")
            .unwrap()
            .check(&m)
            .unwrap()
            .is_none());
        assert!(Threshold::parse("loss>0")
            .unwrap()
            .check(&m)
            .unwrap()
            .is_some());
        assert!(Threshold::parse("loss>0.5%")
            .unwrap()
            .check(&m)
            .unwrap()
            .is_none());
        assert!(Threshold::parse("failed>0")
            .unwrap()
            .check(&m)
            .unwrap()
            .is_none());
        assert!(Threshold::parse("failed>=0")
            .unwrap()
            .check(&m)
            .unwrap()
            .is_some());
        assert!(Threshold::parse("nonsense").is_err());
        assert!(Threshold::parse("p99>fast").is_err());
        assert!(Threshold::parse("bogus>1").unwrap().check(&m).is_err());
    }
}
