//! Finding a TrueType font at runtime and handing it to plotters' `ab_glyph` text renderer.
//!
//! Nothing is linked at build time (no fontconfig, no freetype). The first font file that
//! loads wins, in this order: `$WAVE_PLOT_FONT`, then [`FONT_CANDIDATES`]. Without one, plots
//! are still drawn, without text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The plotters font family name text is drawn with.
pub(crate) const FAMILY: &str = "sans-serif";

/// Environment variable naming a `.ttf`/`.otf` file to use instead of the candidates.
pub const FONT_ENV: &str = "WAVE_PLOT_FONT";

/// Font files tried in order when `$WAVE_PLOT_FONT` is unset or unusable. The first is the
/// Debian/Ubuntu package `fonts-dejavu-core`.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", // Debian, Ubuntu: fonts-dejavu-core
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",          // Fedora, RHEL: dejavu-sans-fonts
    "/usr/share/fonts/TTF/DejaVuSans.ttf",             // Arch: ttf-dejavu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", // fonts-liberation
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",                 // fonts-freefont-ttf
];

/// The outcome of the one-time font lookup.
#[derive(Debug, Clone)]
pub(crate) enum FontStatus {
    /// Text can be drawn.
    Loaded,
    /// No usable font; the message says what was tried and what to install.
    Missing(String),
}

static STATUS: OnceLock<FontStatus> = OnceLock::new();

/// Loads and registers a font once per process; later calls return the first outcome.
pub(crate) fn ensure_font() -> &'static FontStatus {
    STATUS.get_or_init(|| {
        let mut tried: Vec<String> = Vec::new();
        let from_env = std::env::var_os(FONT_ENV).map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in candidates {
            match register(&path) {
                Ok(()) => return FontStatus::Loaded,
                Err(why) => tried.push(format!("{}: {why}", path.display())),
            }
        }
        FontStatus::Missing(format!(
            "no usable font, plots drawn without titles, labels or legends (install the Debian \
             package fonts-dejavu-core or set {FONT_ENV} to a .ttf file); tried: {}",
            tried.join("; ")
        ))
    })
}

fn register(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    // plotters keeps `&'static` font data; this runs at most once per process (OnceLock),
    // so the leak is one font file (~750 KB for DejaVuSans).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| "not a TrueType/OpenType font".to_owned())
}
