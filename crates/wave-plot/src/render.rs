//! Drawing figures (a stack of panels sharing the step axis) into an RGB buffer and writing PNGs.

use std::path::{Path, PathBuf};

use plotters::backend::{BitMapBackend, RGBPixel};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Error;

/// Matplotlib's "tab10" colours: readable on white and distinct from each other.
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),  // blue
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(214, 39, 40),   // red
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A line through the points (dense series, e.g. train loss per logged step).
    Line,
    /// Dots only (sparse series drawn over a line, e.g. eval loss).
    Dots,
    /// A line with a dot on each point (sparse series on their own, e.g. eval accuracy).
    LineDots,
}

/// One named curve: `(step, value)` points, ascending by step.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub mark: Mark,
}

/// One chart: a title, a y-axis name and its curves; the x axis is always the step.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub title: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// Where the legend goes (the corner the curves leave free); `None`: no legend.
    pub legend: Option<SeriesLabelPosition>,
    /// Start the y axis at 0 (rates: a 5% dip should look like 5%, not like a collapse).
    pub y_from_zero: bool,
}

/// A whole image: panels stacked top to bottom.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub size: (u32, u32),
    pub panels: Vec<Panel>,
}

/// Draws `figure` and writes it to `path` as an 8-bit RGB PNG, via a temporary file renamed
/// into place so a viewer never sees half a file. `text`: whether a font is registered.
pub(crate) fn write_png(figure: &Figure, path: &Path, text: bool) -> Result<(), Error> {
    let (w, h) = figure.size;
    let mut buf = vec![0u8; w as usize * h as usize * 3]; // (H, W, RGB)
    draw_figure(figure, &mut buf, text).map_err(|message| Error::Draw {
        path: path.to_path_buf(),
        message,
    })?;

    let mut encoded = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut encoded, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let encode_err = |source| Error::Encode {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = encoder.write_header().map_err(encode_err)?;
        writer.write_image_data(&buf).map_err(encode_err)?;
        writer.finish().map_err(encode_err)?;
    }

    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, &encoded).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

fn draw_figure(figure: &Figure, buf: &mut [u8], text: bool) -> Result<(), String> {
    let root = BitMapBackend::<RGBPixel>::with_buffer_and_format(buf, figure.size)
        .map_err(|e| e.to_string())?
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let rows = figure.panels.len().max(1);
    for (area, panel) in root.split_evenly((rows, 1)).iter().zip(&figure.panels) {
        draw_panel(area, panel, text).map_err(|e| format!("panel {:?}: {e}", panel.title))?;
    }
    root.present().map_err(|e| e.to_string())
}

type DrawErr = DrawingAreaErrorKind<
    <BitMapBackend<'static, RGBPixel> as plotters::backend::DrawingBackend>::ErrorType,
>;

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_, RGBPixel>, Shift>,
    panel: &Panel,
    text: bool,
) -> Result<(), DrawErr> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter().copied());
    let x_range = padded_range(points().map(|(x, _)| x), 0.02, 1.0);
    let zero = panel.y_from_zero.then_some(0.0);
    let mut y_range = padded_range(points().map(|(_, y)| y).chain(zero), 0.06, 1e-3);
    if panel.y_from_zero && y_range.start < 0.0 && points().all(|(_, y)| y >= 0.0) {
        y_range.start = 0.0; // no padding below a zero baseline
    }

    let mut builder = ChartBuilder::on(area);
    builder.margin(14);
    if text {
        builder
            .caption(&panel.title, (crate::font::FAMILY, 26))
            .x_label_area_size(44)
            .y_label_area_size(78);
    } else {
        // No font: keep room for the axes, draw no text at all (any text would fail).
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder.build_cartesian_2d(x_range, y_range)?;

    let x_fmt = |v: &f64| format_number(*v);
    let y_fmt = |v: &f64| format_number(*v);
    let mut mesh = chart.configure_mesh();
    mesh.max_light_lines(4)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(205, 205, 205));
    if text {
        mesh.x_desc("step")
            .y_desc(panel.y_desc.as_str())
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((crate::font::FAMILY, 15))
            .axis_desc_style((crate::font::FAMILY, 17));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;

    for series in &panel.series {
        let color = series.color;
        let line = matches!(series.mark, Mark::Line | Mark::LineDots);
        let dots = matches!(series.mark, Mark::Dots | Mark::LineDots);
        if line {
            chart.draw_series(LineSeries::new(
                series.points.iter().copied(),
                color.stroke_width(2),
            ))?;
        }
        if dots {
            chart.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 4, color.filled())),
            )?;
        }
        // An invisible (empty) series that only carries the legend entry, so the legend shows
        // line and/or dot the way the curve is drawn.
        let label = chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(series.label.as_str());
        let line_style = if line {
            color.stroke_width(2)
        } else {
            TRANSPARENT.into()
        };
        let dot_style = if dots {
            color.filled()
        } else {
            TRANSPARENT.filled()
        };
        label.legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (22, 0)], line_style)
                + Circle::new((11, 0), 4, dot_style)
        });
    }

    if let (true, Some(position)) = (text, panel.legend.clone()) {
        chart
            .configure_series_labels()
            .position(position)
            .label_font((crate::font::FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
    }
    Ok(())
}

/// `[min - pad, max + pad]` of the finite values, with `pad` a fraction of the span; a single
/// value (zero span) gets `min_half_width` either side so the chart still has an extent.
pub(crate) fn padded_range(
    values: impl Iterator<Item = f64>,
    pad: f64,
    min_half_width: f64,
) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span <= 0.0 {
        let half = (lo.abs() * 0.05).max(min_half_width);
        return (lo - half)..(hi + half);
    }
    (lo - span * pad)..(hi + span * pad)
}

/// Short tick labels: `1.5M`, `250k`, `1200`, `0.694`, `3.2e-5`.
pub(crate) fn format_number(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 1e9 {
        format!("{}G", trim(format!("{:.2}", v / 1e9)))
    } else if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1e-3 {
        trim(format!("{v:.4}"))
    } else {
        format!("{v:.1e}")
    }
}
