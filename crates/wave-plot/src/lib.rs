//! PNG training curves for a wave-dist run: what `wave-dist plot RUN_DIR` draws.
//!
//! The trainer (`wave-train`) appends one JSON object per line to `RUN_DIR/metrics.jsonl`:
//!
//! ```text
//! {"kind":"train","step":10,"epoch":0,"loss":0.69,"lr":0.001,"grad_norm":1.3,"samples_per_s":120.5,"tokens_per_s":30000.0,"elapsed_s":5.2}
//! {"kind":"eval","step":100,"split":"validation","loss":0.41,"accuracy":0.83,"samples":2500}
//! ```
//!
//! [`plot_run`] reads it ([`read_metrics`]) and writes three images:
//!
//! | file             | what                                                                  |
//! |------------------|-----------------------------------------------------------------------|
//! | `loss.png`       | train loss per logged step (line), eval loss per split (dots)         |
//! | `accuracy.png`   | eval accuracy per split and eval step; skipped when there is no eval  |
//! | `throughput.png` | train samples/s (top) and tokens/s (bottom) per logged step           |
//! | `language.png`   | eval perplexity (top) and bits per byte (bottom) per split; written   |
//! |                  | only for language models (eval records carrying those figures)        |
//!
//! Unknown keys and record kinds are ignored, so the trainer may add fields freely. A run
//! resumed from a checkpoint logs some steps twice; the record logged last wins.
//!
//! # Fonts
//! Text is rendered by plotters' pure-Rust `ab_glyph` feature from a font file read at runtime —
//! no fontconfig or freetype at build time. The file is `$WAVE_PLOT_FONT` if set, else the first
//! of [`FONT_CANDIDATES`] that exists; on Debian/Ubuntu install **`fonts-dejavu-core`**. With no
//! font the plots are still written, without titles, tick labels or legends, and
//! [`PlotReport::warnings`] says so.
//!
//! # Example
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let run = tempfile::tempdir()?;
//! std::fs::write(
//!     run.path().join("metrics.jsonl"),
//!     concat!(
//!         r#"{"kind":"train","step":10,"loss":0.69,"samples_per_s":120.5,"tokens_per_s":30000.0}"#, "\n",
//!         r#"{"kind":"train","step":20,"loss":0.52,"samples_per_s":122.0,"tokens_per_s":30500.0}"#, "\n",
//!         r#"{"kind":"eval","step":20,"split":"validation","loss":0.55,"accuracy":0.71}"#, "\n",
//!     ),
//! )?;
//! let report = wave_plot::plot_run(run.path(), None)?;
//! assert_eq!(report.written.len(), 3); // loss.png, accuracy.png, throughput.png in the run dir
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

mod font;
mod metrics;
mod render;

pub use font::{FONT_CANDIDATES, FONT_ENV};
pub use metrics::{read_metrics, EvalRecord, Metrics, TrainRecord};

use plotters::chart::SeriesLabelPosition;
use render::{Figure, Mark, Panel, Series, PALETTE};

/// Name of the metrics file inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What [`plot_run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlotReport {
    /// The PNG files written, in the order loss, accuracy, throughput.
    pub written: Vec<PathBuf>,
    /// One reason per plot not written, e.g. `"accuracy.png: no eval records in …"`.
    pub skipped: Vec<String>,
    /// Things that make the written plots worse but did not stop them, e.g. no font found.
    pub warnings: Vec<String>,
}

/// Errors of this crate; each names the file (and line) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metrics file could not be opened or read (missing run dir or file, permissions).
    #[error("cannot read metrics file {}: {source}", path.display())]
    Read {
        /// The metrics file.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// The metrics file holds no train or eval record (empty, or only other kinds).
    #[error("metrics file {} has no train or eval records (is the run still starting?)", path.display())]
    Empty {
        /// The metrics file.
        path: PathBuf,
    },
    /// A line is not JSON, or a train/eval line lacks `step` or has a field of the wrong type.
    #[error("{}:{line}: invalid metrics record: {source}", path.display())]
    Line {
        /// The metrics file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What serde_json objected to.
        source: serde_json::Error,
    },
    /// The output directory could not be created or a PNG could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The directory or PNG file.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// plotters failed to draw a figure.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The PNG being drawn.
        path: PathBuf,
        /// plotters' error, as text (its error type is generic over the backend).
        message: String,
    },
    /// PNG encoding failed.
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        /// The PNG being encoded.
        path: PathBuf,
        /// The encoder's error.
        source: png::EncodingError,
    },
}

/// Reads `run_dir/metrics.jsonl` and writes `loss.png`, `accuracy.png`, `throughput.png` and, for
/// language models, `language.png` to
/// `out_dir` (default: `run_dir`; created if missing), replacing older ones.
///
/// A plot with nothing to show (no eval records → no accuracy plot) is skipped and the reason
/// is put in [`PlotReport::skipped`]; that is not an error.
pub fn plot_run(run_dir: &Path, out_dir: Option<&Path>) -> Result<PlotReport, Error> {
    let metrics_path = run_dir.join(METRICS_FILE);
    let metrics = read_metrics(&metrics_path)?;
    let out_dir = out_dir.unwrap_or(run_dir);
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;

    let mut report = PlotReport::default();
    let text = match font::ensure_font() {
        font::FontStatus::Loaded => true,
        font::FontStatus::Missing(why) => {
            report.warnings.push(why.clone());
            false
        }
    };

    let run_name = run_name(run_dir);
    let mut plans = vec![
        ("loss.png", loss_figure(&metrics, &run_name)),
        ("accuracy.png", accuracy_figure(&metrics, &run_name)),
        ("throughput.png", throughput_figure(&metrics, &run_name)),
    ];
    // Only language models report these; a classifier's run is not told what it lacks.
    if metrics
        .eval
        .iter()
        .any(|r| r.perplexity.is_some() || r.bits_per_byte.is_some())
    {
        plans.push(("language.png", language_figure(&metrics, &run_name)));
    }
    for (file, plan) in plans {
        match plan {
            Ok(figure) => {
                let path = out_dir.join(file);
                render::write_png(&figure, &path, text)?;
                report.written.push(path);
            }
            Err(why) => report
                .skipped
                .push(format!("{file}: {why} in {}", metrics_path.display())),
        }
    }
    Ok(report)
}

/// The run directory's own name for titles (`runs/sst2-base` → `sst2-base`).
fn run_name(run_dir: &Path) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(run_dir)
        .or_else(|| run_dir.canonicalize().ok().as_deref().and_then(named))
        .unwrap_or_else(|| run_dir.display().to_string())
}

/// `(step, value)` for the records where `value` is present and finite.
fn points<'a, T: 'a>(
    records: impl IntoIterator<Item = &'a T>,
    step: impl Fn(&T) -> u64,
    value: impl Fn(&T) -> Option<f64>,
) -> Vec<(f64, f64)> {
    records
        .into_iter()
        .filter_map(|r| {
            value(r)
                .filter(|v| v.is_finite())
                .map(|v| (step(r) as f64, v))
        })
        .collect()
}

/// Train loss as a line; eval loss per split as dots over it (a line of its own when there is
/// no train loss to draw over).
fn loss_figure(m: &Metrics, run: &str) -> Result<Figure, String> {
    let mut series = Vec::new();
    let train = points(&m.train, |r| r.step, |r| r.loss);
    let has_train = !train.is_empty();
    if has_train {
        series.push(Series {
            label: "train".to_owned(),
            points: train,
            color: PALETTE[0],
            mark: Mark::Line,
        });
    }
    for (i, (split, records)) in m.eval_by_split().into_iter().enumerate() {
        let pts = points(records, |r| r.step, |r| r.loss);
        if !pts.is_empty() {
            series.push(Series {
                label: format!("eval: {split}"),
                points: pts,
                color: PALETTE[1 + i % (PALETTE.len() - 1)],
                mark: if has_train {
                    Mark::Dots
                } else {
                    Mark::LineDots
                },
            });
        }
    }
    if series.is_empty() {
        return Err("no train or eval record carries a loss".to_owned());
    }
    Ok(Figure {
        size: (1280, 720),
        panels: vec![Panel {
            title: format!("Loss — {run}"),
            y_desc: "loss".to_owned(),
            series,
            legend: Some(SeriesLabelPosition::UpperRight), // loss falls
            y_from_zero: false,
        }],
    })
}

/// One line with dots per split, for the eval records that carry `value`.
fn eval_series(m: &Metrics, value: fn(&EvalRecord) -> Option<f64>) -> Vec<Series> {
    m.eval_by_split()
        .into_iter()
        .enumerate()
        .filter_map(|(i, (split, records))| {
            let pts = points(records, |r| r.step, value);
            (!pts.is_empty()).then(|| Series {
                label: format!("eval: {split}"),
                points: pts,
                color: PALETTE[1 + i % (PALETTE.len() - 1)],
                mark: Mark::LineDots,
            })
        })
        .collect()
}

/// Eval accuracy per split, one line with dots each.
fn accuracy_figure(m: &Metrics, run: &str) -> Result<Figure, String> {
    if m.eval.is_empty() {
        return Err("no eval records".to_owned());
    }
    let series = eval_series(m, |r| r.accuracy);
    if series.is_empty() {
        return Err("no eval record carries an accuracy".to_owned());
    }
    Ok(Figure {
        size: (1280, 720),
        panels: vec![Panel {
            title: format!("Eval accuracy — {run}"),
            y_desc: "accuracy".to_owned(),
            series,
            legend: Some(SeriesLabelPosition::LowerRight), // accuracy rises
            y_from_zero: false,
        }],
    })
}

/// Eval perplexity over bits per byte, one line per split in each panel; a panel only where some
/// record carries the figure.
fn language_figure(m: &Metrics, run: &str) -> Result<Figure, String> {
    let mut panels = Vec::new();
    for (what, value) in [
        (
            "perplexity",
            (|r: &EvalRecord| r.perplexity) as fn(&EvalRecord) -> Option<f64>,
        ),
        ("bits per byte", |r| r.bits_per_byte),
    ] {
        let series = eval_series(m, value);
        if !series.is_empty() {
            panels.push(Panel {
                title: format!("Eval {what} — {run}"),
                y_desc: what.to_owned(),
                series,
                legend: Some(SeriesLabelPosition::UpperRight), // both fall
                y_from_zero: false,
            });
        }
    }
    if panels.is_empty() {
        return Err("no eval record carries a perplexity or bits per byte".to_owned());
    }
    Ok(Figure {
        size: (1280, 420 * panels.len() as u32),
        panels,
    })
}

/// Samples/s over tokens/s: two panels, since their scales differ by the sequence length.
fn throughput_figure(m: &Metrics, run: &str) -> Result<Figure, String> {
    if m.train.is_empty() {
        return Err("no train records".to_owned());
    }
    let mut panels = Vec::new();
    for (what, unit, color, value) in [
        (
            "samples/s",
            "samples per second",
            PALETTE[2],
            (|r: &TrainRecord| r.samples_per_s) as fn(&TrainRecord) -> Option<f64>,
        ),
        ("tokens/s", "tokens per second", PALETTE[4], |r| {
            r.tokens_per_s
        }),
    ] {
        let pts = points(&m.train, |r| r.step, value);
        if !pts.is_empty() {
            panels.push(Panel {
                title: format!("Train throughput, {what} — {run}"),
                y_desc: unit.to_owned(),
                series: vec![Series {
                    label: what.to_owned(),
                    points: pts,
                    color,
                    mark: Mark::Line,
                }],
                legend: None, // one curve, named by the title
                y_from_zero: true,
            });
        }
    }
    if panels.is_empty() {
        return Err("no train record carries samples_per_s or tokens_per_s".to_owned());
    }
    Ok(Figure {
        size: (1280, 420 * panels.len() as u32),
        panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        use render::format_number as f;
        assert_eq!(f(0.0), "0");
        assert_eq!(f(0.4125), "0.4125");
        assert_eq!(f(0.5), "0.5");
        assert_eq!(f(1200.0), "1200");
        assert_eq!(f(30_000.0), "30k");
        assert_eq!(f(1_500_000.0), "1.5M");
        assert_eq!(f(0.00003), "3.0e-5");
    }

    #[test]
    fn single_value_still_gets_an_extent() {
        let r = render::padded_range([5.0].into_iter(), 0.05, 1.0);
        assert!(r.start < 5.0 && r.end > 5.0);
        let r = render::padded_range(std::iter::empty(), 0.05, 1.0);
        assert_eq!(r, 0.0..1.0);
    }

    #[test]
    fn the_language_plot_is_skipped_for_classifiers_and_drawn_for_language_models() {
        let eval = |perplexity, bits_per_byte| Metrics {
            train: Vec::new(),
            eval: vec![EvalRecord {
                step: 10,
                split: "validation".to_owned(),
                loss: Some(2.0),
                accuracy: Some(0.3),
                perplexity,
                bits_per_byte,
            }],
        };
        assert!(language_figure(&eval(None, None), "r").is_err());
        let masked = language_figure(&eval(Some(7.4), None), "r").expect("perplexity panel");
        assert_eq!(masked.panels.len(), 1);
        let causal = language_figure(&eval(Some(7.4), Some(1.1)), "r").expect("both panels");
        assert_eq!(causal.panels.len(), 2);
    }

    #[test]
    fn figures_draw_without_a_font() -> Result<(), Box<dyn std::error::Error>> {
        // The fallback path: no text at all, so an absent font cannot make drawing fail.
        let dir = tempfile::tempdir()?;
        let metrics = Metrics {
            train: (1..=20)
                .map(|s| TrainRecord {
                    step: s * 10,
                    loss: Some(1.0 / s as f64),
                    samples_per_s: Some(100.0),
                    tokens_per_s: Some(25_600.0),
                })
                .collect(),
            eval: vec![EvalRecord {
                step: 100,
                split: "validation".to_owned(),
                loss: Some(0.2),
                accuracy: Some(0.8),
                perplexity: Some(1.22),
                bits_per_byte: Some(0.9),
            }],
        };
        for (name, fig) in [
            ("loss.png", loss_figure(&metrics, "r")?),
            ("accuracy.png", accuracy_figure(&metrics, "r")?),
            ("throughput.png", throughput_figure(&metrics, "r")?),
            ("language.png", language_figure(&metrics, "r")?),
        ] {
            render::write_png(&fig, &dir.path().join(name), false)?;
        }
        if let Ok(keep) = std::env::var("WAVE_PLOT_KEEP") {
            let keep = Path::new(&keep).join("no-font");
            std::fs::create_dir_all(&keep)?;
            std::fs::copy(dir.path().join("loss.png"), keep.join("loss.png"))?;
        }
        Ok(())
    }
}
