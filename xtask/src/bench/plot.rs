//! The benchmark's plots (SVG, plotters): a figure of ctxsw against K, one
//! line per hypervisor variant.

use super::figures::{Run, Variant};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One line: the variant and its (K, value) points.
pub type Series = (Variant, Vec<(u64, f64)>);

/// The points of `value` for every ctxsw run with M = `m`, per variant
/// (variants without a value, e.g. exits bare, are left out).
pub fn series(runs: &[Run], m: u64, value: impl Fn(&Run) -> Option<f64>) -> Vec<Series> {
    Variant::ALL
        .iter()
        .map(|&v| {
            let mut pts: Vec<(u64, f64)> = runs
                .iter()
                .filter(|r| r.workload == "ctxsw" && r.variant == v && r.m == m)
                .filter_map(|r| Some((r.k, value(r)?)))
                .collect();
            pts.sort_by_key(|p| p.0);
            (v, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

fn color(v: Variant) -> RGBColor {
    match v {
        Variant::Cache => RGBColor(0x1f, 0x77, 0xb4),
        Variant::NoCache => RGBColor(0xd6, 0x27, 0x28),
        Variant::Ept => RGBColor(0x2c, 0xa0, 0x2c),
        Variant::Bare => RGBColor(0x55, 0x55, 0x55),
    }
}

/// Draws `series` against K (log 2 axis) into the SVG file `path`; the y
/// axis is logarithmic when `log_y` (values below 1 are then left out).
pub fn draw(path: &Path, title: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<()> {
    let pts = || series.iter().flat_map(|s| s.1.iter());
    let k_max = pts().map(|p| p.0).max().ok_or_else(|| anyhow!("{title}: nothing to plot"))?.max(2);
    let y_max = pts().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0) * 1.3;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let x = (1u64..k_max).log_scale();
    let caption = (title, ("sans-serif", 22));
    let err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("plotting {}: {e}", path.display());
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("K (address spaces)")
                .y_desc(y_label)
                .x_label_formatter(&|k| k.to_string())
                .draw()
                .map_err(err)?;
            for (v, p) in series {
                let c = color(*v);
                let p: Vec<(u64, f64)> = p.iter().copied().filter(|q| !log_y || q.1 >= 1.0).collect();
                chart
                    .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(v.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
                chart.draw_series(p.iter().map(|&q| Circle::new(q, 4, c.filled()))).map_err(err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }};
    }
    let mut b = ChartBuilder::on(&root);
    b.caption(caption.0, caption.1).margin(15).x_label_area_size(45).y_label_area_size(80);
    if log_y {
        body!(b.build_cartesian_2d(x, (1.0..y_max).log_scale()).map_err(err)?);
    } else {
        body!(b.build_cartesian_2d(x, 0.0..y_max).map_err(err)?);
    }
    root.present().map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}
