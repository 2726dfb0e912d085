//! `report --html`: the review as one page that needs nothing but itself (styles inline, charts
//! as inline SVG drawn by plotters), so it opens offline and can be attached to a ticket.

use plotters::prelude::*;

use crate::report::{ms, percent, Review};

const MISMATCH: RGBColor = RGBColor(0xc6, 0x28, 0x28);
const NOISE: RGBColor = RGBColor(0x90, 0xa4, 0xae);
const CANARY: RGBColor = RGBColor(0xef, 0x6c, 0x00);
const REFERENCE: RGBColor = RGBColor(0x1e, 0x88, 0xe5);
const NEUTRAL: RGBColor = RGBColor(0x43, 0xa0, 0x47);

/// One chart's bars: categories down the side, one bar per series in each.
struct Bars<'a> {
    title: &'a str,
    unit: &'a str,
    /// Counts: axis labels without a fraction.
    whole: bool,
    categories: Vec<String>,
    series: Vec<(&'a str, RGBColor, Vec<f64>)>,
}

pub fn page(r: &Review) -> String {
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>Rollout review: {}</h1>\n<p class=\"meta\">Prometheus {} &middot; last {}</p>\n",
        esc(&r.canary),
        esc(&r.prometheus),
        esc(&r.window)
    ));
    body.push_str("<h2>Comparisons</h2>\n");
    body.push_str(&table(
        &["", ""],
        &[
            vec![
                "mismatch ratio (noise is agreement)".into(),
                percent(r.mismatch_ratio),
            ],
            vec![
                "without noise cancellation (noise against the canary)".into(),
                percent(r.mismatch_ratio_without_noise_cancellation),
            ],
            vec![
                "comparisons (every result but skipped)".into(),
                r.comparisons.to_string(),
            ],
            vec![
                "mismatches and failed copies".into(),
                r.mismatches.to_string(),
            ],
            vec!["noise".into(), r.noise.to_string()],
        ],
        "summary",
    ));
    let results_rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|(n, v)| vec![n.clone(), v.to_string()])
        .collect();
    body.push_str(&chart(&Bars {
        title: "Comparison results",
        unit: "comparisons",
        whole: true,
        categories: r.results.iter().map(|(n, _)| n.clone()).collect(),
        series: vec![(
            "comparisons",
            NEUTRAL,
            r.results.iter().map(|(_, v)| *v as f64).collect(),
        )],
    }));
    body.push_str(&table(&["result", "count"], &results_rows, "results"));
    body.push_str("<h2>Mirror decisions</h2>\n");
    let decisions: Vec<Vec<String>> = r
        .decisions
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| vec![n.clone(), v.to_string()])
        .collect();
    body.push_str(&table(&["decision", "count"], &decisions, "decisions"));
    body.push_str("<p>Every other decision: 0.</p>\n");
    if !r.baseline.is_empty() {
        let rows: Vec<Vec<String>> = r
            .baseline
            .iter()
            .map(|(n, v)| vec![n.clone(), v.to_string()])
            .collect();
        body.push_str("<h2>Copies to the baseline</h2>\n");
        body.push_str(&table(&["result", "count"], &rows, "baseline"));
    }
    body.push_str("<h2>Endpoints</h2>\n<p>Differing elements, one per element per comparison: counted as mismatches, or as noise where two healthy instances differ too.</p>\n");
    if r.endpoints.is_empty() {
        body.push_str("<p>No differing element counted.</p>\n");
    } else {
        body.push_str(&chart(&Bars {
            title: "Differing elements per endpoint",
            unit: "differences",
            whole: true,
            categories: r.endpoints.iter().map(|e| e.endpoint.clone()).collect(),
            series: vec![
                (
                    "mismatch",
                    MISMATCH,
                    r.endpoints
                        .iter()
                        .map(|e| e.mismatch_differences as f64)
                        .collect(),
                ),
                (
                    "noise",
                    NOISE,
                    r.endpoints
                        .iter()
                        .map(|e| e.noise_differences as f64)
                        .collect(),
                ),
            ],
        }));
        let mut rows = Vec::new();
        for e in &r.endpoints {
            for t in &e.top {
                rows.push(vec![
                    e.endpoint.clone(),
                    t.element.clone(),
                    t.mismatch.to_string(),
                    t.noise.to_string(),
                ]);
            }
        }
        body.push_str(&table(
            &["endpoint", "element", "mismatch", "noise"],
            &rows,
            "elements",
        ));
    }
    let l = &r.latency;
    body.push_str(&format!(
        "<h2>Latency</h2>\n<p>The canary's answers against the {}'s, over the same window.</p>\n",
        l.reference
    ));
    let value = |v: Option<f64>| v.unwrap_or(0.0);
    body.push_str(&chart(&Bars {
        title: "Latency (ms)",
        unit: "ms",
        whole: false,
        categories: vec!["p50".into(), "p99".into()],
        series: vec![
            (
                "canary",
                CANARY,
                vec![value(l.canary_p50_ms), value(l.canary_p99_ms)],
            ),
            (
                l.reference,
                REFERENCE,
                vec![value(l.reference_p50_ms), value(l.reference_p99_ms)],
            ),
        ],
    }));
    body.push_str(&table(
        &["", "answers", "p50", "p99"],
        &[
            vec![
                "canary".into(),
                l.canary_samples.to_string(),
                ms(l.canary_p50_ms),
                ms(l.canary_p99_ms),
            ],
            vec![
                l.reference.into(),
                l.reference_samples.to_string(),
                ms(l.reference_p50_ms),
                ms(l.reference_p99_ms),
            ],
        ],
        "latency",
    ));
    body.push_str(&format!(
        "<p>p99 ratio (canary / {}): {}</p>\n",
        l.reference,
        l.p99_ratio.map_or("n/a".to_string(), |x| format!("{x:.2}"))
    ));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Rollout review: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        esc(&r.canary)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:960px}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}\
.meta{color:#666}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}\
td:not(:first-child){font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
figure{margin:1em 0}";

fn table(head: &[&str], rows: &[Vec<String>], id: &str) -> String {
    let mut s = format!("<table id=\"{id}\">\n");
    if head.iter().any(|h| !h.is_empty()) {
        s.push_str("<tr>");
        for h in head {
            s.push_str(&format!("<th>{}</th>", esc(h)));
        }
        s.push_str("</tr>\n");
    }
    for row in rows {
        s.push_str("<tr>");
        for cell in row {
            s.push_str(&format!("<td>{}</td>", esc(cell)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// The chart as an inline `<svg>`, or a line saying why there is none.
fn chart(bars: &Bars<'_>) -> String {
    match draw(bars) {
        Ok(svg) => format!("<figure>\n{svg}\n</figure>\n"),
        Err(e) => format!(
            "<p>The chart {:?} could not be drawn: {}</p>\n",
            bars.title,
            esc(&e)
        ),
    }
}

/// Horizontal grouped bars: long endpoint names read along the side, not crammed under bars.
fn draw(bars: &Bars<'_>) -> Result<String, String> {
    let n = bars.categories.len().max(1);
    let groups = bars.series.len().max(1);
    let height = u32::try_from(n.saturating_mul(groups).saturating_mul(22))
        .unwrap_or(2000)
        .clamp(120, 2000)
        .saturating_add(110);
    let label_width = bars
        .categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(4);
    let label_area = u32::try_from(label_width.saturating_mul(8))
        .unwrap_or(400)
        .clamp(60, 400);
    let max = bars
        .series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let rows = n as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(bars.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0.0..top, -0.5..rows - 0.5)
            .map_err(|e| e.to_string())?;
        let categories = &bars.categories;
        // Rows top down in the order given: row i at y = n - 1 - i.
        let label = move |y: &f64| {
            let at = y.round();
            if (y - at).abs() > 1e-6 || at < 0.0 {
                return String::new();
            }
            let i = (rows - 1.0 - at) as usize;
            categories.get(i).cloned().unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n.saturating_add(1))
            .y_label_formatter(&label)
            .x_desc(bars.unit)
            .x_label_formatter(&|x: &f64| {
                if bars.whole {
                    // Counts are whole: no tick between two of them.
                    if (x - x.round()).abs() < 1e-9 {
                        format!("{x:.0}")
                    } else {
                        String::new()
                    }
                } else {
                    format!("{x:.1}")
                }
            })
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        // Each row's bars share 0.8 of its height, the first series on top.
        let band = 0.8 / groups as f64;
        for (g, (name, color, values)) in bars.series.iter().enumerate() {
            let color = *color;
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let centre = rows - 1.0 - i as f64;
                    let y = centre + 0.4 - band * (g as f64 + 1.0);
                    Rectangle::new([(0.0, y), (*v, y + band * 0.9)], color.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new(
                        [
                            (x, y.saturating_sub(5)),
                            (x.saturating_add(12), y.saturating_add(5)),
                        ],
                        color.filled(),
                    )
                });
        }
        if bars.series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Text for HTML: the five characters with a meaning there, as entities.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
