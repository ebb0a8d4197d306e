//! SVG plots (plotters, SVG backend only: no fonts or bitmaps needed).

use std::path::Path;

use plotters::prelude::*;

use super::Plot;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `p` into an SVG file.
pub fn svg(path: &Path, p: &Plot) -> Result<(), String> {
    draw(path, p).map_err(|e| format!("plot {}: {e}", path.display()))
}

fn draw(path: &Path, p: &Plot) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts = p.series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if p.log_x {
        x0 = x0.max(1e-3);
        x1 = x1.max(x0 * 10.0);
    } else if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.05 };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&p.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(p.x_label.as_str())
                .y_desc(p.y_label.as_str())
                .draw()?;
            for (i, (name, points)) in p.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|(x, _)| !p.log_x || *x > 0.0)
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }};
    }
    if p.log_x {
        finish!(builder.build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)?);
    } else {
        finish!(builder.build_cartesian_2d(x0..x1, 0.0..y1)?);
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg() {
        let dir = std::env::temp_dir().join(format!("rcl-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for log_x in [false, true] {
            let p = Plot {
                file: "t".into(),
                title: "Latency CDF".into(),
                x_label: "ms".into(),
                y_label: "fraction".into(),
                series: vec![("ws".into(), vec![(0.1, 0.0), (1.0, 0.5), (10.0, 1.0)])],
                log_x,
            };
            let f = dir.join("t.svg");
            svg(&f, &p).unwrap();
            let s = std::fs::read_to_string(&f).unwrap();
            assert!(s.starts_with("<svg") && s.contains("Latency CDF"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
