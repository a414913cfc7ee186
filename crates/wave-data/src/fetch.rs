//! `fetch`: obtain an official raw archive (download, or copy from a mirror folder) and verify it
//! against the checksums pinned in `datasets/<name>/recipe.toml`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest as _, Md5};
use object_store::ObjectStoreExt;
use serde::Deserialize;
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::store::{block_on, retry_config};

/// Built-in recipes, embedded from `datasets/<name>/recipe.toml`.
const RECIPES: &[(&str, &str)] = &[
    (
        "agnews",
        include_str!("../../../datasets/agnews/recipe.toml"),
    ),
    ("imdb", include_str!("../../../datasets/imdb/recipe.toml")),
];

/// Environment variable naming a folder of archives to copy from instead of downloading.
pub const MIRROR_ENV: &str = "WAVE_DATA_MIRROR";

/// A fetch recipe (`datasets/<name>/recipe.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Data set name.
    pub name: String,
    /// Archive file name.
    pub file: String,
    /// Official download URL.
    pub url: String,
    /// `prepare --format` value for the archive.
    pub format: String,
    /// The official archive's checksums.
    pub official: Official,
    /// Other accepted archives (offline mirrors), pinned by SHA-256.
    #[serde(default)]
    pub variants: Vec<Variant>,
}

/// Checksums of the official archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Official {
    /// MD5 of the whole archive, when known.
    #[serde(default)]
    pub archive_md5: Option<String>,
    /// Splits it holds.
    pub splits: Vec<String>,
    /// Known member checksums (verified whenever the member is present).
    #[serde(default)]
    pub members: Vec<Member>,
}

/// A pinned archive member.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Path inside the archive.
    pub path: String,
    /// MD5, lowercase hex.
    pub md5: String,
}

/// An accepted non-official archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Human-readable name.
    pub name: String,
    /// SHA-256 of the archive.
    pub sha256: String,
    /// Splits it holds.
    pub splits: Vec<String>,
}

/// Look up a built-in recipe by name.
pub fn recipe(name: &str) -> Result<Recipe> {
    let (_, text) = RECIPES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| Error::Fetch {
            what: name.to_string(),
            msg: format!(
                "unknown data set; known: {}",
                RECIPES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    toml::from_str(text).map_err(|e| Error::Fetch {
        what: format!("datasets/{name}/recipe.toml"),
        msg: e.to_string(),
    })
}

/// Result of a fetch.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// Where the verified archive is.
    pub path: PathBuf,
    /// Which accepted archive it is (`official` or a variant name).
    pub variant: String,
    /// Splits that archive holds.
    pub splits: Vec<String>,
    /// Its SHA-256.
    pub sha256: String,
    /// Members whose pinned MD5 was checked.
    pub members_checked: Vec<String>,
}

/// Fetch `name` into `out_dir`: copy from `mirror` (or `$WAVE_DATA_MIRROR`) when given, else
/// download (bounded timeouts). The archive is written under a temporary name, verified, then
/// renamed; a file that fails verification is removed.
pub fn fetch(name: &str, mirror: Option<&Path>, out_dir: &Path) -> Result<FetchReport> {
    let r = recipe(name)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let dest = out_dir.join(&r.file);
    let tmp = out_dir.join(format!("{}.part", r.file));
    let env_mirror = std::env::var_os(MIRROR_ENV)
        .filter(|m| !m.is_empty())
        .map(PathBuf::from);
    let mirror = mirror.map(Path::to_path_buf).or(env_mirror);
    let res = match &mirror {
        Some(dir) => {
            let src = dir.join(&r.file);
            if !src.is_file() {
                return Err(Error::Fetch {
                    what: src.display().to_string(),
                    msg: format!("mirror folder has no {}", r.file),
                });
            }
            std::fs::copy(&src, &tmp)
                .map(|_| ())
                .map_err(|e| Error::io(&src, e))
        }
        None => download(&r.url, &tmp),
    }
    .and_then(|()| verify_archive(&r, &tmp));
    match res {
        Ok(mut report) => {
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
            report.path = dest;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn download(url: &str, to: &Path) -> Result<()> {
    let fail = |msg: String| Error::Fetch {
        what: url.to_string(),
        msg,
    };
    let parsed = url::Url::parse(url).map_err(|e| fail(e.to_string()))?;
    let base = format!("{}://{}", parsed.scheme(), parsed.authority());
    let store = object_store::http::HttpBuilder::new()
        .with_url(base)
        .with_retry(retry_config())
        .with_client_options(
            object_store::ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(1800)),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;
    // `parse`, not `from`: the URL path is already percent-encoded and must not be encoded twice.
    let path = object_store::path::Path::parse(parsed.path().trim_start_matches('/'))
        .map_err(|e| fail(e.to_string()))?;
    let bytes = block_on(async move { store.get(&path).await?.bytes().await })?.map_err(|e| {
        fail(format!(
            "download failed (no network? use --mirror DIR or {MIRROR_ENV}): {e}"
        ))
    })?;
    let mut f = std::fs::File::create(to).map_err(|e| Error::io(to, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(to, e))
}

/// Check an archive against the recipe: the official archive MD5, a variant's SHA-256, or (when the
/// archive digest is not pinned) every pinned member MD5. Members with a pinned MD5 that are present
/// are always checked.
pub fn verify_archive(r: &Recipe, path: &Path) -> Result<FetchReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let md5 = hex::encode(Md5::digest(&bytes));
    let mut checked = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let bad = |e: std::io::Error| Error::Fetch {
        what: path.display().to_string(),
        msg: format!("not a readable .tar.gz: {e}"),
    };
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let member = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(m) = r.official.members.iter().find(|m| m.path == member) {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(bad)?;
            let got = hex::encode(Md5::digest(&buf));
            if got != m.md5 {
                return Err(Error::Checksum {
                    uri: format!("{}:{member}", path.display()),
                    expected: format!("md5:{}", m.md5),
                    actual: format!("md5:{got}"),
                });
            }
            checked.push(member);
        }
    }
    let report = |variant: &str, splits: &[String]| FetchReport {
        path: path.to_path_buf(),
        variant: variant.to_string(),
        splits: splits.to_vec(),
        sha256: sha.clone(),
        members_checked: checked.clone(),
    };
    if r.official.archive_md5.as_deref() == Some(md5.as_str()) {
        return Ok(report("official", &r.official.splits));
    }
    if let Some(v) = r.variants.iter().find(|v| v.sha256 == sha) {
        return Ok(report(&v.name, &v.splits));
    }
    if r.official.archive_md5.is_none()
        && !r.official.members.is_empty()
        && checked.len() == r.official.members.len()
    {
        return Ok(report(
            "official (verified by member MD5s)",
            &r.official.splits,
        ));
    }
    let mut expected: Vec<String> = r
        .official
        .archive_md5
        .iter()
        .map(|m| format!("official md5:{m}"))
        .collect();
    expected.extend(
        r.variants
            .iter()
            .map(|v| format!("{} sha256:{}", v.name, v.sha256)),
    );
    if r.official.archive_md5.is_none() {
        expected.push(format!(
            "official archive with members {}",
            r.official
                .members
                .iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Err(Error::Checksum {
        uri: path.display().to_string(),
        expected: expected.join(" | "),
        actual: format!("sha256:{sha} md5:{md5}"),
    })
}
