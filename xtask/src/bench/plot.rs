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

/// Draws `series` against K (a log-2 axis labelled with the powers of 2)
/// into the SVG file `path`; the y axis is logarithmic when `log_y`
/// (values below 1 are then left out). Bare is drawn first, wide and
/// light, so that EPT (often on top of it) stays visible.
pub fn draw(path: &Path, title: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<()> {
    let pts = || series.iter().flat_map(|s| s.1.iter());
    let k_max = pts().map(|p| p.0).max().ok_or_else(|| anyhow!("{title}: nothing to plot"))?.max(2);
    let y_max = pts().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0) * if log_y { 30.0 } else { 1.6 };
    let y_min = (pts().map(|p| p.1).filter(|&y| y >= 1.0).fold(f64::MAX, f64::min) / 3.0).clamp(1.0, y_max / 10.0);
    let x_max = (k_max as f64).log2();
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("plotting {}: {e}", path.display());
    let mut order: Vec<&Series> = series.iter().collect();
    order.sort_by_key(|s| s.0 != Variant::Bare);
    macro_rules! body {
        ($chart:expr, $yfmt:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("K (address spaces)")
                .y_desc(y_label)
                .x_labels(x_max as usize + 1)
                .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
                .y_label_formatter(&$yfmt)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(err)?;
            for (v, p) in order {
                let (c, width) = if *v == Variant::Bare { (color(*v).mix(0.45), 7) } else { (color(*v).mix(1.0), 2) };
                let p: Vec<(f64, f64)> =
                    p.iter().filter(|q| !log_y || q.1 >= 1.0).map(|q| ((q.0 as f64).log2(), q.1)).collect();
                chart
                    .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(width)))
                    .map_err(err)?
                    .label(v.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width)));
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
    b.caption(title, ("sans-serif", 22)).margin(15).x_label_area_size(45).y_label_area_size(80);
    let x = -0.2..x_max + 0.2;
    if log_y {
        body!(b.build_cartesian_2d(x, (y_min..y_max).log_scale()).map_err(err)?, |y: &f64| format!("{y:.0e}"));
    } else {
        body!(b.build_cartesian_2d(x, 0.0..y_max).map_err(err)?, |y: &f64| format!("{y:.0}"));
    }
    root.present().map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_variant_into_an_svg() {
        let s: Vec<Series> = vec![
            (Variant::Cache, vec![(1, 3712.0), (2, 7598.0), (16, 60695.0)]),
            (Variant::NoCache, vec![(1, 1190282.0), (16, 19054416.0)]),
            (Variant::Ept, vec![(1, 2841.0), (16, 45271.0)]),
            (Variant::Bare, vec![(1, 2841.0), (16, 45271.0)]),
        ];
        let path = std::env::temp_dir().join(format!("quadrant-plot-test-{}.svg", std::process::id()));
        draw(&path, "ctxsw, M=64: guest cycles per round", "cycles", &s, true).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        if std::env::var_os("QUADRANT_KEEP_PLOT").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        for v in Variant::ALL {
            assert!(svg.contains(&format!(">\n{}\n</text>", v.name())), "legend of {}", v.name());
        }
        assert!(svg.contains(">\n16\n</text>"), "K axis labelled in powers of 2");
        assert!(draw(&path, "empty", "y", &[], false).is_err());
    }
}
