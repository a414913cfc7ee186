//! Behaviour of `plot_run` on synthetic run directories.

use std::fmt::Write as _;
use std::path::Path;

use wave_plot::{plot_run, Error};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A plausible run: train lines every 10 steps with extra keys the trainer may add, eval every
/// 100 steps on two splits, and a record kind this crate does not know.
fn synthetic_metrics(with_eval: bool) -> String {
    let mut s = String::new();
    s.push_str(r#"{"kind":"config","model":"wave-base","world_size":8}"#);
    s.push('\n');
    for step in (10..=1000u64).step_by(10) {
        let t = step as f64;
        let loss = 0.35 + 0.35 * (-t / 250.0).exp() + 0.02 * (t * 0.37).sin();
        let sps = 120.0 + 6.0 * (t * 0.11).cos();
        writeln!(
            s,
            r#"{{"kind":"train","step":{step},"epoch":0,"loss":{loss},"lr":0.001,"grad_norm":1.3,"samples_per_s":{sps},"tokens_per_s":{},"elapsed_s":{},"data_wait_s":0.01,"comm_s":0.2}}"#,
            sps * 256.0,
            t * 0.5
        )
        .ok();
        if with_eval && step % 100 == 0 {
            for (split, offset) in [("validation", 0.03), ("test", 0.05)] {
                writeln!(
                    s,
                    r#"{{"kind":"eval","step":{step},"split":"{split}","loss":{},"accuracy":{},"samples":2500}}"#,
                    loss + offset,
                    0.9 - 0.4 * (-t / 300.0).exp() - offset
                )
                .ok();
            }
        }
    }
    s
}

fn run_dir_with(contents: &str) -> Result<tempfile::TempDir, std::io::Error> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("metrics.jsonl"), contents)?;
    Ok(dir)
}

/// Width and height from a PNG's signature + IHDR chunk, checking both are well formed.
fn png_size(path: &Path) -> Result<(u32, u32), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    assert!(
        bytes.len() > 33,
        "{} is too short for a PNG",
        path.display()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "PNG signature of {}",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk of {}", path.display());
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    // And the whole image decodes.
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf)?;
    assert!(buf.iter().any(|&b| b != 255), "{} is blank", path.display());
    Ok((be(16), be(20)))
}

#[test]
fn writes_loss_accuracy_and_throughput_pngs_for_a_synthetic_run() -> TestResult {
    let run = run_dir_with(&synthetic_metrics(true))?;
    let report = plot_run(run.path(), None)?;

    let names: Vec<_> = report
        .written
        .iter()
        .filter_map(|p| p.file_name()?.to_str())
        .collect();
    assert_eq!(names, ["loss.png", "accuracy.png", "throughput.png"]);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    for path in &report.written {
        assert_eq!(path.parent(), Some(run.path()), "defaults to the run dir");
        let (w, h) = png_size(path)?;
        assert!(
            (640..=4096).contains(&w) && (360..=4096).contains(&h),
            "{w}x{h}"
        );
        assert!(w >= h, "landscape-ish: {w}x{h}");
    }
    if let Ok(keep) = std::env::var("WAVE_PLOT_KEEP") {
        // For looking at the images: WAVE_PLOT_KEEP=/some/dir cargo test ...
        std::fs::create_dir_all(&keep)?;
        for path in &report.written {
            if let Some(name) = path.file_name() {
                std::fs::copy(path, Path::new(&keep).join(name))?;
            }
        }
    }
    Ok(())
}

#[test]
fn writes_to_out_dir_when_given_and_creates_it() -> TestResult {
    let run = run_dir_with(&synthetic_metrics(true))?;
    let out = run.path().join("plots").join("nested");
    let report = plot_run(run.path(), Some(&out))?;
    assert_eq!(report.written.len(), 3);
    for path in &report.written {
        assert_eq!(path.parent(), Some(out.as_path()));
        png_size(path)?;
    }
    assert!(!run.path().join("loss.png").exists());
    Ok(())
}

#[test]
fn skips_accuracy_without_eval_lines() -> TestResult {
    let run = run_dir_with(&synthetic_metrics(false))?;
    let report = plot_run(run.path(), None)?;

    assert!(run.path().join("loss.png").exists());
    assert!(run.path().join("throughput.png").exists());
    assert!(!run.path().join("accuracy.png").exists());
    assert_eq!(report.written.len(), 2);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(
        report.skipped[0].starts_with("accuracy.png:") && report.skipped[0].contains("no eval"),
        "{}",
        report.skipped[0]
    );
    Ok(())
}

#[test]
fn eval_only_run_plots_loss_and_accuracy_and_skips_throughput() -> TestResult {
    let run = run_dir_with(concat!(
        r#"{"kind":"eval","step":0,"split":"validation","loss":0.7,"accuracy":0.5}"#,
        "\n",
        r#"{"kind":"eval","step":100,"split":"validation","loss":0.5,"accuracy":0.75}"#,
        "\n",
    ))?;
    let report = plot_run(run.path(), None)?;
    assert_eq!(report.written.len(), 2);
    assert!(
        report.skipped[0].starts_with("throughput.png:"),
        "{:?}",
        report.skipped
    );
    Ok(())
}

#[test]
fn single_train_line_still_plots() -> TestResult {
    let run = run_dir_with(
        r#"{"kind":"train","step":1,"loss":0.69,"samples_per_s":10.0,"tokens_per_s":2560.0}"#,
    )?;
    let report = plot_run(run.path(), None)?;
    assert_eq!(report.written.len(), 2, "{report:?}");
    Ok(())
}

#[test]
fn bad_json_line_is_an_error_naming_file_and_line() -> TestResult {
    let mut contents = synthetic_metrics(true);
    let good_lines = contents.lines().count();
    contents.push_str("{\"kind\":\"train\",\"step\":1010,\"loss\":0.4\n"); // torn write
    let run = run_dir_with(&contents)?;

    let err = match plot_run(run.path(), None) {
        Err(e) => e,
        Ok(report) => panic!("expected an error, got {report:?}"),
    };
    let expected_line = good_lines + 1;
    match &err {
        Error::Line { path, line, .. } => {
            assert_eq!(path, &run.path().join("metrics.jsonl"));
            assert_eq!(*line, expected_line);
        }
        other => panic!("expected Error::Line, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("metrics.jsonl"), "{msg}");
    assert!(msg.contains(&format!(":{expected_line}:")), "{msg}");
    Ok(())
}

#[test]
fn train_line_with_wrong_field_type_is_an_error_naming_the_line() -> TestResult {
    let run = run_dir_with(concat!(
        r#"{"kind":"train","step":1,"loss":0.7}"#,
        "\n\n",
        r#"{"kind":"train","step":2,"loss":"nan?"}"#,
        "\n",
    ))?;
    match plot_run(run.path(), None) {
        Err(Error::Line { line, .. }) => assert_eq!(line, 3, "blank lines still count"),
        other => panic!("expected Error::Line, got {other:?}"),
    }
    Ok(())
}

#[test]
fn missing_metrics_file_is_an_error_naming_the_path() -> TestResult {
    let run = tempfile::tempdir()?;
    let err = match plot_run(run.path(), None) {
        Err(e) => e,
        Ok(report) => panic!("expected an error, got {report:?}"),
    };
    let expected = run.path().join("metrics.jsonl");
    assert!(
        matches!(&err, Error::Read { path, .. } if path == &expected),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&expected.display().to_string()),
        "{err}"
    );
    Ok(())
}

#[test]
fn empty_metrics_file_is_an_error_naming_the_path() -> TestResult {
    for contents in ["", "\n\n", "{\"kind\":\"config\",\"model\":\"x\"}\n"] {
        let run = run_dir_with(contents)?;
        let err = match plot_run(run.path(), None) {
            Err(e) => e,
            Ok(report) => panic!("expected an error for {contents:?}, got {report:?}"),
        };
        let expected = run.path().join("metrics.jsonl");
        assert!(
            matches!(&err, Error::Empty { path } if path == &expected),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&expected.display().to_string()),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn resumed_run_keeps_the_last_record_per_step() -> TestResult {
    let path_dir = run_dir_with(concat!(
        r#"{"kind":"train","step":10,"loss":0.9}"#,
        "\n",
        r#"{"kind":"train","step":20,"loss":0.8}"#,
        "\n",
        r#"{"kind":"train","step":30,"loss":0.7}"#,
        "\n",
        // crash after step 30; resumed from the step-20 checkpoint
        r#"{"kind":"train","step":20,"loss":0.81}"#,
        "\n",
        r#"{"kind":"train","step":30,"loss":0.71}"#,
        "\n",
        r#"{"kind":"future_kind","step":30}"#,
        "\n",
    ))?;
    let m = wave_plot::read_metrics(&path_dir.path().join("metrics.jsonl"))?;
    let got: Vec<_> = m.train.iter().map(|r| (r.step, r.loss)).collect();
    assert_eq!(got, [(10, Some(0.9)), (20, Some(0.81)), (30, Some(0.71))]);
    assert!(m.eval.is_empty());
    Ok(())
}
