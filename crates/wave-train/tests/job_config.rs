//! The job config: sections, overrides and the keys named in errors.

use wave_train::{JobConfig, Resume};

const BASE: &str = "[data]\nuri = \"data/x\"\n";

#[test]
fn overrides_take_toml_values_and_create_missing_sections() {
    let cfg = JobConfig::from_toml(
        BASE,
        &[
            "train.max_steps=7".into(),
            "model.mode=\"interference\"".into(),
            "train.lr=2e-3".into(),
            "name=run-a".into(),
        ],
    )
    .expect("valid");
    assert_eq!(cfg.train.max_steps, 7);
    assert_eq!(cfg.model.mode, wave_model::Mode::Interference);
    assert_eq!(cfg.train.lr, 2e-3);
    assert_eq!(
        cfg.name, "run-a",
        "a value that is not a TOML literal is taken as a string"
    );
}

#[test]
fn resume_accepts_never_auto_or_a_step() {
    let parse = |v: &str| {
        JobConfig::from_toml(BASE, &[format!("train.resume={v}")]).map(|c| c.train.resume)
    };
    assert_eq!(parse("\"never\"").expect("never"), Resume::Never);
    assert_eq!(parse("\"auto\"").expect("auto"), Resume::Auto);
    assert_eq!(parse("120").expect("step"), Resume::Step(120));
    assert_eq!(parse("\"120\"").expect("step as string"), Resume::Step(120));
    let err = parse("\"latest\"").expect_err("unknown word").to_string();
    assert!(err.contains("train.resume"), "{err}");
}

#[test]
fn resume_accepts_a_checkpoint_url_and_checkpoint_takes_retention_and_failure_keys() {
    let cfg = JobConfig::from_toml(
        BASE,
        &[
            "train.resume=\"s3://bucket/run/step-00000120\"".into(),
            "checkpoint.keep_every=1000".into(),
            "checkpoint.on_failure=\"stop\"".into(),
        ],
    )
    .expect("valid");
    assert_eq!(
        cfg.train.resume,
        Resume::Uri("s3://bucket/run/step-00000120".into())
    );
    assert_eq!(
        (cfg.checkpoint.keep_every, cfg.checkpoint.on_failure),
        (1000, wave_train::OnFailure::Stop)
    );
    let again = JobConfig::from_toml(&cfg.to_toml().expect("serialise"), &[]).expect("reparse");
    assert_eq!(cfg, again);
    let err = JobConfig::from_toml(BASE, &["checkpoint.on_failure=\"retry\"".into()])
        .expect_err("unknown policy")
        .to_string();
    assert!(err.contains("on_failure"), "{err}");
    let err = JobConfig::from_toml(BASE, &["checkpoint.max_in_flight=0".into()])
        .expect_err("zero")
        .to_string();
    assert!(err.contains("checkpoint.max_in_flight"), "{err}");
}

#[test]
fn the_config_round_trips_through_toml() {
    let cfg = JobConfig::from_toml(BASE, &["train.resume=5".into()]).expect("valid");
    let again = JobConfig::from_toml(&cfg.to_toml().expect("serialise"), &[]).expect("reparse");
    assert_eq!(cfg, again);
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("train.lr=0", "train.lr"),
        ("train.grad_accum_steps=0", "train.grad_accum_steps"),
        ("train.beta2=1.5", "train.beta1/beta2"),
        ("data.max_length=0", "data.max_length"),
        ("checkpoint.evry_steps=3", "evry_steps"),
        ("train.lr.x=1", "train.lr"),
    ];
    for (set, key) in cases {
        let err = JobConfig::from_toml(BASE, &[set.into()])
            .expect_err(set)
            .to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
    let err = JobConfig::from_toml("[model]\nd_model = 8\n", &[])
        .expect_err("no data section")
        .to_string();
    assert!(err.contains("data"), "{err}");
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            JobConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 9, "only {seen} configs found in {}", dir.display());
}

#[test]
fn the_objective_decides_the_head_and_a_contradicting_head_is_refused() {
    use wave_model::Head;
    use wave_train::ObjectiveKind;
    let cfg = JobConfig::from_toml(BASE, &["train.objective=\"causal_lm\"".into()]).expect("valid");
    assert_eq!(cfg.model.head, Head::CausalLm);
    assert_eq!(cfg.objective(), ObjectiveKind::CausalLm);
    // Without an objective, the head says what to learn (configs written before objectives).
    let cfg = JobConfig::from_toml(BASE, &["model.head=\"masked_lm\"".into()]).expect("valid");
    assert_eq!(cfg.objective(), ObjectiveKind::MaskedLm);
    let err = JobConfig::from_toml(
        BASE,
        &[
            "train.objective=\"masked_lm\"".into(),
            "model.head=\"classification\"".into(),
        ],
    )
    .expect_err("contradiction")
    .to_string();
    assert!(
        err.contains("train.objective") && err.contains("model.head"),
        "{err}"
    );
}
