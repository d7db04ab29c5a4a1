//! SVG plots for the report, drawn with `plotters`' SVG backend.
//!
//! The viewer renders the text, so no font file is read here: a bitmap
//! backend would need a TrueType font and an image encoder, which cost the
//! release build about 40 s of CPU for a handful of pictures.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

const FONT_FAMILY: &str = "sans-serif";

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const BASELINE: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
const PALETTE: [RGBColor; 4] =
    [OURS, RGBColor(0xd6, 0x27, 0x28), BASELINE, RGBColor(0x2c, 0xa0, 0x2c)];

/// One bar: its label, value, and whether it is ours (coloured) or a baseline (grey).
pub struct Bar<'a> {
    pub label: &'a str,
    pub value: f64,
    pub ours: bool,
}

/// A horizontal bar chart, each bar labelled with its name and value.
pub fn bars(path: &Path, title: &str, unit: &str, bars: &[Bar<'_>]) -> anyhow::Result<()> {
    let height = 80 + 44 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.value).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let n = bars.len() as f64;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12).x_label_area_size(36).caption(title, (FONT_FAMILY, 20));
    let mut chart = builder.build_cartesian_2d(0.0..max, -0.5..n - 0.5)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().disable_y_axis();
    mesh.x_desc(unit).label_style((FONT_FAMILY, 14));
    mesh.draw()?;
    for (i, bar) in bars.iter().enumerate() {
        // Top to bottom in the order given.
        let y = n - 1.0 - i as f64;
        let color = if bar.ours { OURS } else { BASELINE };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y - 0.35), (bar.value.max(0.0), y + 0.35)],
            color.filled(),
        )))?;
        let label = format!("{}: {} {unit}", bar.label, crate::report::fmt_value(bar.value));
        chart.draw_series(std::iter::once(Text::new(
            label,
            (max * 0.01, y + 0.12),
            (FONT_FAMILY, 15).into_font().color(&BLACK),
        )))?;
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
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let y_max = all.map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(12)
        .caption(title, (FONT_FAMILY, 20))
        .x_label_area_size(40)
        .y_label_area_size(60);
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc).y_desc(y_desc).label_style((FONT_FAMILY, 14));
    mesh.draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let drawn =
            chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?;
        drawn.label(s.name).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
    }
    for (i, (x, label)) in markers.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(*x, 0.0), (*x, y_max)],
            BLACK.stroke_width(1),
        )))?;
        // Staggered, so labels of close markers do not overlap.
        let y = y_max * (0.95 - 0.08 * i as f64);
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (*x + x_max * 0.005, y),
            (FONT_FAMILY, 14).into_font().color(&BLACK),
        )))?;
    }
    if series.len() > 1 {
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
