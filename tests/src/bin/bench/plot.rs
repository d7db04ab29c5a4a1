//! PNG plots for the report, drawn with `plotters`' bitmap backend.
//!
//! Text needs a TrueType font: the `ab_glyph` feature reads one we register
//! from a file, no fontconfig involved. When no font file is found the plots
//! are drawn without any text (bars and lines only) and the report says so.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT_FAMILY: &str = "sans-serif";
const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const BASELINE: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
const PALETTE: [RGBColor; 4] =
    [OURS, RGBColor(0xd6, 0x27, 0x28), BASELINE, RGBColor(0x2c, 0xa0, 0x2c)];

/// Registers a font once; whether text can be drawn.
pub fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                // Registered fonts must live for the whole program.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                for style in [FontStyle::Normal, FontStyle::Bold] {
                    if plotters::style::register_font(FONT_FAMILY, style, bytes).is_err() {
                        return false;
                    }
                }
                return true;
            }
        }
        false
    })
}

/// One bar: its label, value, and whether it is ours (coloured) or a baseline (grey).
pub struct Bar<'a> {
    pub label: &'a str,
    pub value: f64,
    pub ours: bool,
}

/// A horizontal bar chart, each bar labelled with its name and value.
pub fn bars(path: &Path, title: &str, unit: &str, bars: &[Bar<'_>]) -> anyhow::Result<()> {
    let text = have_font();
    let height = 80 + 44 * bars.len() as u32;
    let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.value).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let n = bars.len() as f64;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12).x_label_area_size(if text { 36 } else { 8 });
    if text {
        builder.caption(title, (FONT_FAMILY, 20));
    }
    let mut chart = builder.build_cartesian_2d(0.0..max, -0.5..n - 0.5)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().disable_y_axis();
    if text {
        mesh.x_desc(unit).label_style((FONT_FAMILY, 14));
    } else {
        mesh.x_labels(0);
    }
    mesh.draw()?;
    for (i, bar) in bars.iter().enumerate() {
        // Top to bottom in the order given.
        let y = n - 1.0 - i as f64;
        let color = if bar.ours { OURS } else { BASELINE };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y - 0.35), (bar.value.max(0.0), y + 0.35)],
            color.filled(),
        )))?;
        if text {
            let label = format!("{}: {} {unit}", bar.label, crate::report::fmt_value(bar.value));
            chart.draw_series(std::iter::once(Text::new(
                label,
                (max * 0.01, y + 0.12),
                (FONT_FAMILY, 15).into_font().color(&BLACK),
            )))?;
        }
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart; `markers` are vertical lines at an x with a label.
pub fn lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series<'_>],
    markers: &[(f64, String)],
) -> anyhow::Result<()> {
    let text = have_font();
    let root = BitMapBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let y_max = all.map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if text {
        builder.caption(title, (FONT_FAMILY, 20)).x_label_area_size(40).y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_desc).y_desc(y_desc).label_style((FONT_FAMILY, 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let drawn =
            chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?;
        if text {
            drawn.label(s.name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    for (i, (x, label)) in markers.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(*x, 0.0), (*x, y_max)],
            BLACK.stroke_width(1),
        )))?;
        if text {
            // Staggered, so labels of close markers do not overlap.
            let y = y_max * (0.95 - 0.08 * i as f64);
            chart.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*x + x_max * 0.005, y),
                (FONT_FAMILY, 14).into_font().color(&BLACK),
            )))?;
        }
    }
    if text && series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT_FAMILY, 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
