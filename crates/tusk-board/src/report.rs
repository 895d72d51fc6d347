//! [`write_report`]: a run's scalars as one self-contained HTML page (inline SVG charts, no
//! scripts, no external resources), grouped by the tag prefix before the first `/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tusk_storage::Location;

use crate::{Result, Scalar, read_scalars};

/// Size of one chart, in SVG user units (CSS pixels).
const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 42.0;
/// Series with at most this many points get a visible marker on every point.
const MARK_ALL: usize = 300;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}\
.meta{color:#666;margin:0 0 16px}\
table{border-collapse:collapse}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}\
td.num{font-variant-numeric:tabular-nums}\
.charts{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0;border:1px solid #e3e3e3;border-radius:4px}figcaption{padding:2px 8px;color:#555;font-size:12px}\
svg text{font:11px system-ui,sans-serif;fill:#444}svg text.title{font-size:13px;fill:#222}\
.grid{stroke:#eee}.axis{stroke:#888}.line{fill:none;stroke:#1f77b4;stroke-width:1.5}\
circle.pt{fill:#1f77b4}circle.h{fill:transparent}circle.h:hover,circle.pt:hover{fill:#d62728}\
a{color:#1f5fa8;text-decoration:none}";

/// Read every scalar series of `run_dir` (see [`read_scalars`]) and render them as a
/// self-contained HTML page titled `title` (see [`render_report`]).
pub fn write_report(run_dir: &Location, title: &str) -> Result<String> {
    let scalars = read_scalars(run_dir)?;
    Ok(render_report(title, &run_dir.url(), &scalars))
}

/// Render scalar series as a self-contained HTML page: a table of each tag's last value, then
/// one inline SVG line chart per tag (step on x, value on y, a hover title on points), grouped
/// by the tag prefix before the first `/`. `source` (the run directory) is shown under the
/// title. All text is HTML-escaped; non-finite values are listed but not drawn.
pub fn render_report(title: &str, source: &str, scalars: &BTreeMap<String, Vec<Scalar>>) -> String {
    let mut html = page_head(title);
    let times = scalars.values().flatten().map(|s| s.wall_time);
    let span = times.clone().reduce(f64::min).zip(times.reduce(f64::max));
    let _ = write!(
        html,
        "<p class=\"meta\">{} scalar series from <code>{}</code>",
        scalars.len(),
        escape(source)
    );
    if let Some((first, last)) = span {
        let _ = write!(
            html,
            ", logged {} to {} UTC",
            utc_time(first),
            utc_time(last)
        );
    }
    html.push_str("</p>\n");
    if scalars.is_empty() {
        html.push_str("<p>No scalar values were found.</p>\n</body>\n</html>\n");
        return html;
    }

    // Chart ids are positional so that no tag text ever lands in an id or a URL fragment.
    let ids: BTreeMap<&str, usize> = scalars
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();

    html.push_str(
        "<h2>Last values</h2>\n<table>\n<thead><tr><th>tag</th><th>step</th><th>value</th>\
         <th>min</th><th>max</th><th>points</th></tr></thead>\n<tbody>\n",
    );
    for (tag, series) in scalars {
        let Some(last) = series.last() else { continue };
        let finite = series.iter().map(|s| s.value).filter(|v| v.is_finite());
        let min = finite.clone().reduce(f64::min);
        let max = finite.reduce(f64::max);
        let opt = |v: Option<f64>| v.map(fmt_value).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            html,
            "<tr><td><a href=\"#chart-{}\">{}</a></td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            ids[tag.as_str()],
            escape(tag),
            last.step,
            escape(&fmt_value(last.value)),
            escape(&opt(min)),
            escape(&opt(max)),
            series.len()
        );
    }
    html.push_str("</tbody>\n</table>\n");

    let mut groups: BTreeMap<&str, Vec<(&str, &[Scalar])>> = BTreeMap::new();
    for (tag, series) in scalars {
        groups.entry(group_of(tag)).or_default().push((tag, series));
    }
    // Tags without a prefix come last, under their own heading.
    let ungrouped = groups.remove("");
    for (name, charts) in groups
        .iter()
        .map(|(g, c)| (escape(g), c))
        .chain(ungrouped.iter().map(|c| ("(no prefix)".to_string(), c)))
    {
        let _ = write!(html, "<section>\n<h2>{name}</h2>\n<div class=\"charts\">\n");
        for (tag, series) in charts {
            let _ = writeln!(
                html,
                "<figure id=\"chart-{}\" data-tag=\"{}\">",
                ids[tag],
                escape(tag)
            );
            chart(&mut html, tag, series);
            let _ = writeln!(
                html,
                "<figcaption>{} · {} points</figcaption>\n</figure>",
                escape(tag),
                series.len()
            );
        }
        html.push_str("</div>\n</section>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// The chart group of a tag: its text before the first `/`, or `""`.
pub fn group_of(tag: &str) -> &str {
    tag.split_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// One inline SVG line chart of `series` (step on x, value on y).
fn chart(html: &mut String, tag: &str, series: &[Scalar]) {
    let t = escape(tag);
    let _ = writeln!(
        html,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\">\n\
         <text class=\"title\" x=\"{LEFT}\" y=\"18\">{t}</text>"
    );
    // Points in step order (a resumed run may log steps again; the sort is stable).
    let mut pts: Vec<Scalar> = series
        .iter()
        .copied()
        .filter(|s| s.value.is_finite())
        .collect();
    pts.sort_by_key(|s| s.step);
    let skipped = series.len() - pts.len();
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (HEIGHT - BOTTOM, TOP);
    if pts.is_empty() {
        let _ = writeln!(
            html,
            "<rect class=\"axis\" fill=\"none\" x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\"/>\
             \n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no finite values</text>\n</svg>",
            x1 - x0,
            y0 - y1,
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
        return;
    }

    // Domains: x is the step range (integer ticks), y is widened to whole tick steps.
    let (smin, smax) = (pts[0].step as f64, pts[pts.len() - 1].step as f64);
    let (smin, smax) = if smin == smax {
        (smin - 1.0, smax + 1.0)
    } else {
        (smin, smax)
    };
    let xstep = nice_step(smax - smin, 6).max(1.0);
    let vmin = pts.iter().map(|s| s.value).fold(f64::INFINITY, f64::min);
    let vmax = pts
        .iter()
        .map(|s| s.value)
        .fold(f64::NEG_INFINITY, f64::max);
    let (vmin, vmax) = if vmin == vmax {
        let pad = if vmin == 0.0 { 1.0 } else { vmin.abs() * 0.1 };
        (vmin - pad, vmax + pad)
    } else {
        (vmin, vmax)
    };
    let ystep = nice_step(vmax - vmin, 5);
    let (lo, hi) = (
        (vmin / ystep).floor() * ystep,
        (vmax / ystep).ceil() * ystep,
    );
    let px = |step: f64| x0 + (step - smin) / (smax - smin) * (x1 - x0);
    let py = |v: f64| y0 - (v - lo) / (hi - lo) * (y0 - y1);

    y_grid(html, (lo, hi, ystep), (x0, x1), py);
    // x tick labels.
    let first = (smin / xstep).ceil() as i64;
    let last = (smax / xstep).floor() as i64;
    for k in first..=last {
        let s = k as f64 * xstep;
        let x = px(s);
        let _ = writeln!(
            html,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y0}\" y2=\"{:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y0 + 4.0,
            y0 + 16.0,
            fmt_tick(s, xstep, smin.abs().max(smax.abs()))
        );
    }
    let _ = writeln!(
        html,
        "<line class=\"axis\" x1=\"{x0}\" x2=\"{x1}\" y1=\"{y0}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{x0}\" x2=\"{x0}\" y1=\"{y0}\" y2=\"{y1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">step</text>",
        (x0 + x1) / 2.0,
        HEIGHT - 6.0
    );
    if skipped > 0 {
        let _ = writeln!(
            html,
            "<text x=\"{x1}\" y=\"18\" text-anchor=\"end\">{skipped} non-finite not drawn</text>"
        );
    }

    // The line, reduced to first/min/max/last per pixel column so long runs stay small
    // without hiding spikes.
    let columns = columns(&pts, |s| px(s.step as f64).round() as i64);
    html.push_str("<polyline class=\"line\" points=\"");
    for col in &columns {
        for &i in &col.keep {
            let s = pts[i];
            let _ = write!(html, "{:.1},{:.1} ", px(s.step as f64), py(s.value));
        }
    }
    html.push_str("\"/>\n");

    // Hover markers: every point for short series, else one per pixel column (its last point).
    let marks: Vec<(usize, &str)> = if pts.len() <= MARK_ALL {
        (0..pts.len()).map(|i| (i, "pt")).collect()
    } else {
        let mut m: Vec<_> = columns.iter().map(|c| (c.last, "h")).collect();
        if let Some(l) = m.last_mut() {
            l.1 = "pt";
        }
        m
    };
    let r = if pts.len() <= 60 { 2.5 } else { 1.5 };
    for (i, class) in marks {
        let s = pts[i];
        let r = if class == "h" { 3.0 } else { r };
        let _ = writeln!(
            html,
            "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\"><title>{t}\nstep {}: {}</title></circle>",
            px(s.step as f64),
            py(s.value),
            s.step,
            escape(&fmt_value(s.value))
        );
    }
    html.push_str("</svg>\n");
}

/// The start of a page titled `title`, up to and including its heading.
fn page_head(title: &str) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let t = escape(title);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n"
    );
    html
}

/// Horizontal grid lines and y tick labels from `lo` to `hi` every `step`, across `x0..x1`.
fn y_grid(
    html: &mut String,
    (lo, hi, step): (f64, f64, f64),
    (x0, x1): (f64, f64),
    py: impl Fn(f64) -> f64,
) {
    let n = ((hi - lo) / step).round() as i64;
    for i in 0..=n {
        let v = lo + i as f64 * step;
        let y = py(v);
        let _ = writeln!(
            html,
            "<line class=\"grid\" x1=\"{x0}\" x2=\"{x1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            fmt_tick(v, step, lo.abs().max(hi.abs()))
        );
    }
}

/// The points of one pixel column: indices to draw, in order, and the last one.
struct Column {
    keep: Vec<usize>,
    last: usize,
}

/// Group consecutive points by pixel column; keep first, min, max and last of each.
fn columns(pts: &[Scalar], col_of: impl Fn(&Scalar) -> i64) -> Vec<Column> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < pts.len() {
        let c = col_of(&pts[start]);
        let mut end = start + 1;
        while end < pts.len() && col_of(&pts[end]) == c {
            end += 1;
        }
        let range = start..end;
        let min = range
            .clone()
            .min_by(|&a, &b| pts[a].value.total_cmp(&pts[b].value))
            .unwrap_or(start);
        let max = range
            .clone()
            .max_by(|&a, &b| pts[a].value.total_cmp(&pts[b].value))
            .unwrap_or(start);
        let mut keep = vec![start, min, max, end - 1];
        keep.sort_unstable();
        keep.dedup();
        out.push(Column {
            keep,
            last: end - 1,
        });
        start = end;
    }
    out
}

/// A round tick spacing (1, 2 or 5 times a power of ten) giving about `target` intervals.
fn nice_step(range: f64, target: u32) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / f64::from(target);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A tick label for `v` on an axis with spacing `step` whose largest magnitude is `max_abs`:
/// as many decimals as the spacing needs, one `k`/`M`/`G`/`T` suffix for the whole axis when its
/// values are large, exponent form when the spacing is tiny.
fn fmt_tick(v: f64, step: f64, max_abs: f64) -> String {
    if v.abs() < step * 1e-6 {
        return "0".into();
    }
    let decimals = |unit: f64| (-(step / unit).log10().floor()).clamp(0.0, 12.0) as usize;
    if max_abs >= 1e4 {
        let (unit, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|&(unit, _)| max_abs >= unit)
            .unwrap_or((1e3, "k"));
        return format!("{:.*}{suffix}", decimals(unit), v / unit);
    }
    if step < 1e-4 {
        return format!("{v:.2e}");
    }
    format!("{:.*}", decimals(1.0), v)
}

/// A value as written in the file: the shortest text that reads back as the same `f32`,
/// in exponent form when very large or small.
fn fmt_value(v: f64) -> String {
    let f = v as f32;
    let a = f.abs();
    if a != 0.0 && a.is_finite() && !(1e-4..1e7).contains(&a) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time.
pub fn utc_time(secs: f64) -> String {
    let secs = secs.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[(i64, f64)]) -> Vec<Scalar> {
        values
            .iter()
            .map(|&(step, value)| Scalar {
                step,
                wall_time: 1_700_000_000.0 + step as f64,
                value,
            })
            .collect()
    }

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        let mut m = BTreeMap::new();
        m.insert(
            "eval/<script>alert('x')</script>".to_string(),
            series(&[(1, 0.5), (2, 0.6)]),
        );
        m.insert("a&b/\"q\"".to_string(), series(&[(1, 1.0)]));
        let html = render_report("<b>run & \"title\"</b>", "/tmp/<dir>", &m);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(!html.contains("<dir>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("<title>&lt;b&gt;run &amp; &quot;title&quot;&lt;/b&gt;</title>"));
        assert!(html.contains("<h2>a&amp;b</h2>"));
        assert!(html.contains("data-tag=\"a&amp;b/&quot;q&quot;\""));
    }

    #[test]
    fn every_tag_gets_a_chart_grouped_by_prefix() {
        let tags = [
            "train/loss",
            "eval/auc",
            "eval/hr@10",
            "train/learning_rate",
            "train/samples_per_sec",
            "epoch",
        ];
        let mut m = BTreeMap::new();
        for (i, tag) in tags.iter().enumerate() {
            m.insert(
                tag.to_string(),
                series(&[(0, i as f64), (10, 2.0 * i as f64 + 1.0), (20, 0.5)]),
            );
        }
        let html = render_report("run", "/r", &m);
        assert_eq!(html.matches("<svg ").count(), tags.len());
        assert_eq!(html.matches("<figure ").count(), tags.len());
        for tag in tags {
            assert!(html.contains(&format!("data-tag=\"{tag}\"")), "{tag}");
            assert!(html.contains(&format!(">{tag}</a></td>")), "{tag} in table");
        }
        // Groups: eval, train, then the ungrouped tags last; each chart under its group.
        let eval = html.find("<h2>eval</h2>").unwrap();
        let train = html.find("<h2>train</h2>").unwrap();
        let none = html.find("<h2>(no prefix)</h2>").unwrap();
        assert!(eval < train && train < none);
        let auc = html.find("data-tag=\"eval/auc\"").unwrap();
        let loss = html.find("data-tag=\"train/loss\"").unwrap();
        let epoch = html.find("data-tag=\"epoch\"").unwrap();
        assert!(eval < auc && auc < train && train < loss && loss < none && none < epoch);
        // Self-contained: nothing fetched, nothing run.
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("<link"));
        assert!(!html.contains("@import"));
        assert_eq!(
            html.matches("http").count(),
            html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
    }

    #[test]
    fn last_values_table_and_hover_titles() {
        let mut m = BTreeMap::new();
        m.insert(
            "train/loss".to_string(),
            series(&[(1, 0.9), (2, 0.5), (3, 0.25)]),
        );
        let html = render_report("r", "/r", &m);
        assert!(html.contains(
            "<td class=\"num\">3</td><td class=\"num\">0.25</td><td class=\"num\">0.25</td>\
             <td class=\"num\">0.9</td><td class=\"num\">3</td>"
        ));
        assert!(html.contains("<title>train/loss\nstep 2: 0.5</title>"));
        assert_eq!(html.matches("<circle ").count(), 3);
    }

    #[test]
    fn degenerate_series_render() {
        let mut m = BTreeMap::new();
        m.insert("one".to_string(), series(&[(5, 3.0)]));
        m.insert("zero".to_string(), series(&[(1, 0.0), (2, 0.0)]));
        m.insert(
            "nan".to_string(),
            series(&[(1, f64::NAN), (2, f64::INFINITY)]),
        );
        m.insert(
            "some_nan".to_string(),
            series(&[(1, 1.0), (2, f64::NAN), (3, 2.0)]),
        );
        let html = render_report("r", "/r", &m);
        assert_eq!(html.matches("<svg ").count(), 4);
        assert!(html.contains("no finite values"));
        assert!(html.contains("1 non-finite not drawn"));
        for bad in [
            "=\"NaN", "=\"inf", "=\"-inf", ",NaN", "NaN,", ",inf", "inf,",
        ] {
            assert!(!html.contains(bad), "non-finite coordinate {bad}");
        }
    }

    #[test]
    fn long_series_are_reduced_but_keep_spikes() {
        let mut values: Vec<(i64, f64)> = (0..100_000).map(|i| (i, 1.0)).collect();
        values[54_321].1 = 1000.0;
        let mut m = BTreeMap::new();
        m.insert("train/loss".to_string(), series(&values));
        let html = render_report("r", "/r", &m);
        assert!(html.len() < 200_000, "{} bytes", html.len());
        // The spike is the top of the y axis and the line reaches it.
        assert!(html.contains(&format!(",{TOP:.1} ")), "spike drawn");
    }

    #[test]
    fn ticks_and_values_format() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(0.7, 5), 0.1);
        assert_eq!(nice_step(1000.0, 6), 200.0);
        assert_eq!(fmt_tick(0.30000000000000004, 0.1, 1.0), "0.3");
        assert_eq!(fmt_tick(1e-17, 0.1, 1.0), "0");
        assert_eq!(fmt_tick(400.0, 200.0, 1000.0), "400");
        assert_eq!(fmt_tick(25_000.0, 5_000.0, 25_000.0), "25k");
        assert_eq!(fmt_tick(5_000.0, 5_000.0, 25_000.0), "5k");
        assert_eq!(fmt_tick(1_500_000.0, 500_000.0, 2e6), "1.5M");
        assert_eq!(fmt_tick(500_000.0, 500_000.0, 2e6), "0.5M");
        assert_eq!(fmt_tick(0.00002, 0.00001, 0.0001), "2.00e-5");
        assert_eq!(fmt_value(0.1f32 as f64), "0.1");
        assert_eq!(fmt_value(12345.5), "12345.5");
        assert_eq!(fmt_value(1e-7), "1e-7");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(utc_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(1_700_000_000.5), "2023-11-14 22:13:20");
    }
}

/// One panel of a study page: points (x, y) with an axis label; `categories` names the x
/// positions 0, 1, … of a categorical parameter; `log_x` draws x on a log scale.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// The chart's title.
    pub title: String,
    /// What x is.
    pub x_label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// Draw them joined in x order (a best-so-far curve) rather than as a scatter.
    pub line: bool,
    /// x on a log scale.
    pub log_x: bool,
    /// Names of x = 0, 1, … for a categorical parameter.
    pub categories: Vec<String>,
}

/// A hyper-parameter study as a self-contained HTML page: a table (`rows`, first row the
/// header), then one inline SVG chart per panel (best-so-far against trials, each parameter
/// against the metric).
pub fn render_panels(title: &str, source: &str, rows: &[Vec<String>], panels: &[Panel]) -> String {
    let mut html = page_head(title);
    let _ = write!(
        html,
        "<p class=\"meta\">from <code>{}</code></p>\n<div class=\"charts\">\n",
        escape(source)
    );
    for p in panels {
        html.push_str("<figure>\n");
        scatter(&mut html, p);
        html.push_str("</figure>\n");
    }
    html.push_str("</div>\n");
    if let Some((head, body)) = rows.split_first() {
        html.push_str("<h2>Trials</h2>\n<table>\n<tr>");
        for h in head {
            let _ = write!(html, "<th>{}</th>", escape(h));
        }
        html.push_str("</tr>\n");
        for r in body {
            html.push_str("<tr>");
            for c in r {
                let _ = write!(html, "<td class=\"num\">{}</td>", escape(c));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// One panel as an inline SVG chart.
fn scatter(html: &mut String, p: &Panel) {
    let t = escape(&p.title);
    let _ = writeln!(
        html,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\">\n\
         <text class=\"title\" x=\"{LEFT}\" y=\"18\">{t}</text>"
    );
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (HEIGHT - BOTTOM, TOP);
    let tx = |x: f64| if p.log_x { x.log10() } else { x };
    let mut pts: Vec<(f64, f64)> = p
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!p.log_x || *x > 0.0))
        .collect();
    if pts.is_empty() {
        let _ = writeln!(
            html,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no finished trials</text>\n</svg>",
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
        return;
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let span = |lo: f64, hi: f64| {
        if lo == hi {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - pad, hi + pad)
        } else {
            (lo, hi)
        }
    };
    let (xmin, xmax) = if p.categories.is_empty() {
        span(tx(pts[0].0), tx(pts[pts.len() - 1].0))
    } else {
        (-0.5, p.categories.len() as f64 - 0.5)
    };
    let ymin = pts.iter().map(|q| q.1).fold(f64::INFINITY, f64::min);
    let ymax = pts.iter().map(|q| q.1).fold(f64::NEG_INFINITY, f64::max);
    let (ymin, ymax) = span(ymin, ymax);
    let ystep = nice_step(ymax - ymin, 5);
    let (lo, hi) = (
        (ymin / ystep).floor() * ystep,
        (ymax / ystep).ceil() * ystep,
    );
    let px = |x: f64| x0 + (tx(x) - xmin) / (xmax - xmin) * (x1 - x0);
    let pxc = |x: f64| x0 + (x - xmin) / (xmax - xmin) * (x1 - x0);
    let py = |v: f64| y0 - (v - lo) / (hi - lo) * (y0 - y1);
    y_grid(html, (lo, hi, ystep), (x0, x1), py);
    // x ticks: category names, powers of ten on a log axis, round numbers otherwise.
    let ticks: Vec<(f64, String)> = if !p.categories.is_empty() {
        p.categories
            .iter()
            .enumerate()
            .map(|(i, c)| (pxc(i as f64), c.clone()))
            .collect()
    } else {
        let step = if p.log_x {
            1.0
        } else {
            nice_step(xmax - xmin, 6)
        };
        let (first, last) = ((xmin / step).ceil() as i64, (xmax / step).floor() as i64);
        (first..=last)
            .map(|k| {
                let v = k as f64 * step;
                let label = if p.log_x {
                    format!("1e{k}")
                } else {
                    fmt_tick(v, step, xmin.abs().max(xmax.abs()))
                };
                (pxc(v), label)
            })
            .collect()
    };
    for (x, label) in ticks {
        let _ = writeln!(
            html,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y0}\" y2=\"{:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y0 + 4.0,
            y0 + 16.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        html,
        "<line class=\"axis\" x1=\"{x0}\" x2=\"{x1}\" y1=\"{y0}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{x0}\" x2=\"{x0}\" y1=\"{y0}\" y2=\"{y1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        (x0 + x1) / 2.0,
        HEIGHT - 6.0,
        escape(&p.x_label)
    );
    let xpos = |x: f64| {
        if p.categories.is_empty() {
            px(x)
        } else {
            pxc(x)
        }
    };
    if p.line {
        html.push_str("<polyline class=\"line\" points=\"");
        for (x, y) in &pts {
            let _ = write!(html, "{:.1},{:.1} ", xpos(*x), py(*y));
        }
        html.push_str("\"/>\n");
    }
    for (x, y) in &pts {
        let shown = if p.categories.is_empty() {
            fmt_value(*x)
        } else {
            p.categories.get(*x as usize).cloned().unwrap_or_default()
        };
        let _ = writeln!(
            html,
            "<circle class=\"pt\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{}: {}\n{}</title></circle>",
            xpos(*x),
            py(*y),
            escape(&p.x_label),
            escape(&shown),
            escape(&fmt_value(*y))
        );
    }
    html.push_str("</svg>\n");
}
