//! Medians, the markdown tables, the startup plot (hand-written SVG) and the raw samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::images::Image;
use crate::measure::{Metric, Results, Unit};
use crate::servers::Server;

pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `v` in the unit and precision of `scale` (the median), without the unit name; and that name.
fn scaled(metric: Metric, scale: f64, v: f64) -> (String, &'static str) {
    match metric.unit() {
        Unit::Seconds if scale < 1e-3 => (format!("{:.1}", v * 1e6), "µs"),
        Unit::Seconds if scale < 1.0 => (format!("{:.1}", v * 1e3), "ms"),
        Unit::Seconds => (format!("{v:.2}"), "s"),
        Unit::MegabytesPerSecond => (format!("{v:.0}"), "MB/s"),
        Unit::Bytes => (format!("{:.1}", v / (1 << 20) as f64), "MiB"),
    }
}

/// The median of `samples` with its unit, then `[min–max]` when the samples differ.
fn format_samples(metric: Metric, samples: &[f64]) -> Option<String> {
    let m = median(samples)?;
    let (value, unit) = scaled(metric, m, m);
    let mut text = format!("{value} {unit}");
    let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = (scaled(metric, m, lo).0, scaled(metric, m, hi).0);
    if lo != hi {
        let _ = write!(text, " [{lo}–{hi}]");
    }
    Some(text)
}

/// The text of one cell: median [min–max] (ratio to `reference`), `*` when some runs failed,
/// `fail` when none succeeded, `—` when the measurement does not apply, `n/a` when it cannot be
/// made on this machine.
fn cell_text(
    image: &Image,
    server: &str,
    metric: Metric,
    results: &Results,
    reference: &str,
) -> String {
    let Some(cell) = results.cells.get(&(image.name.clone(), server, metric)) else {
        return "—".to_string();
    };
    if cell.unavailable {
        return "n/a".to_string();
    }
    let reference_median = results
        .cells
        .get(&(image.name.clone(), reference, metric))
        .and_then(|c| median(&c.samples))
        .filter(|_| server != reference);
    match (median(&cell.samples), format_samples(metric, &cell.samples)) {
        (Some(v), Some(mut text)) => {
            if let Some(r) = reference_median {
                let _ = write!(text, " ({:.2}×)", v / r);
            }
            if cell.error.is_some() {
                text.push('*');
            }
            text
        }
        _ => "fail".to_string(),
    }
}

/// The metrics measured on `image` by any of `servers`.
fn measured(image: &Image, servers: &[Server], results: &Results) -> Vec<Metric> {
    Metric::ALL
        .into_iter()
        .filter(|&m| {
            servers
                .iter()
                .any(|s| results.cells.contains_key(&(image.name.clone(), s.name, m)))
        })
        .collect()
}

/// The summary: per image, a row per workload (times and rates, not memory), a column per
/// server. The tables the top-level README quotes.
pub fn summary(images: &[Image], servers: &[Server], results: &Results, reference: &str) -> String {
    let mut out = String::new();
    for image in images {
        let metrics: Vec<Metric> = measured(image, servers, results)
            .into_iter()
            .filter(|m| {
                !matches!(m.unit(), Unit::Bytes)
                    && !matches!(
                        m,
                        Metric::ServerCpu | Metric::ServerUserPerTrip | Metric::ServerSystemPerTrip
                    )
            })
            .collect();
        let _ = writeln!(out, "\n### {} ({} entries)\n", image.name, image.entries);
        let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
        let _ = writeln!(out, "| workload | {} |", names.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(servers.len()));
        for metric in metrics {
            let mut row = format!("| {} |", metric.label());
            for server in servers {
                let text = if results
                    .unavailable
                    .contains_key(&(image.name.clone(), server.name))
                {
                    "n/a".to_string()
                } else {
                    cell_text(image, server.name, metric, results, reference)
                };
                let _ = write!(row, " {text} |");
            }
            let _ = writeln!(out, "{row}");
        }
    }
    out
}

/// The table of the top-level README: what the startup rows are, then [`summary`], then why a
/// server is `n/a` or a cell `fail` (first lines).
pub fn headline(
    images: &[Image],
    servers: &[Server],
    results: &Results,
    reference: &str,
) -> String {
    let mut out = String::from(
        "\n- `startup cmd`: from spawning the command until a `stat` of a deep path of the image \
         answers: the server in the foreground (`lazycfs mount --foreground`, the peers' \
         binaries), `lazycfs mount --mode service` for the service (its daemon already running), \
         and for the kernel `mount -t erofs` then `mount -t overlay`, two processes \
         (util-linux's `mount` puts the image on a loop device, as `mount.composefs` does; \
         the workloads and `startup lib` use file-backed EROFS).\n- `startup lib`: the same mount made by a running \
         process: the lazycfs library call (`lazycfs::mount::mount`, `mount_overlay` for \
         `ovl`), the two `mount(2)` calls for the kernel; `—` where there is no library call \
         (the peers, the service, lazycfs binaries other than this tree's).\n- `cold`: page cache dropped just before; `warm`: right \
         after another start of the same kind.\n",
    );
    out.push_str(&summary(images, servers, results, reference));
    let mut notes = Vec::new();
    for image in images {
        for server in servers {
            if let Some(why) = results.unavailable.get(&(image.name.clone(), server.name)) {
                notes.push(format!("{} on {}: n/a, {why}", server.name, image.name));
                continue;
            }
            for metric in Metric::ALL {
                let cell = results
                    .cells
                    .get(&(image.name.clone(), server.name, metric));
                if let Some(e) = cell.and_then(|c| c.error.as_ref()) {
                    notes.push(format!(
                        "{} on {}, {}: {e}",
                        server.name,
                        image.name,
                        metric.label()
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n`fail`: no successful run; `*`: some runs failed.\n");
        for note in notes {
            let _ = writeln!(out, "- {}", note.lines().next().unwrap_or(""));
        }
    }
    out
}

/// One markdown table per image: a row per server, a column per metric, medians [min–max] with
/// the ratio of the medians to `reference` (the kernel composefs mount). Times: lower is better;
/// MB/s: higher is better. Then the FUSE requests per entry of each command, and their opcodes.
pub fn markdown(
    images: &[Image],
    servers: &[Server],
    results: &Results,
    reference: &str,
) -> String {
    let mut out = String::new();
    let mut notes = Vec::new();
    for image in images {
        let metrics = measured(image, servers, results);
        let _ = writeln!(out, "\n### {} ({} entries)\n", image.name, image.entries);
        let labels: Vec<&str> = metrics.iter().map(|m| m.label()).collect();
        let _ = writeln!(out, "| server | {} |", labels.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(metrics.len()));
        for server in servers {
            let mut row = format!("| {} |", server.name);
            if let Some(why) = results.unavailable.get(&(image.name.clone(), server.name)) {
                notes.push(format!("{} on {}: {why}", server.name, image.name));
                let _ = writeln!(out, "{row}{}", " n/a |".repeat(metrics.len()));
                continue;
            }
            for &metric in &metrics {
                if let Some(e) = results
                    .cells
                    .get(&(image.name.clone(), server.name, metric))
                    .and_then(|c| c.error.as_ref())
                {
                    notes.push(format!(
                        "{} on {}, {}: {e}",
                        server.name,
                        image.name,
                        metric.label()
                    ));
                }
                let text = cell_text(image, server.name, metric, results, reference);
                let _ = write!(row, " {text} |");
            }
            let _ = writeln!(out, "{row}");
        }
        requests_tables(&mut out, &mut notes, image, servers, results);
    }
    if !notes.is_empty() {
        let _ = writeln!(
            out,
            "\nNotes (`fail`: no successful run; `*`: some runs failed):\n"
        );
        for note in notes {
            let first_line = note.lines().next().unwrap_or("");
            let _ = writeln!(out, "- {first_line}");
        }
    }
    out
}

/// The counted requests of `image`: per entry for each server and command, then per opcode.
fn requests_tables(
    out: &mut String,
    notes: &mut Vec<String>,
    image: &Image,
    servers: &[Server],
    results: &Results,
) {
    let counted = |server: &Server, metric: Metric| {
        results
            .requests
            .get(&(image.name.clone(), server.name, metric))
    };
    let rows: Vec<&Server> = servers
        .iter()
        .filter(|s| Metric::ALL.iter().any(|&m| counted(s, m).is_some()))
        .collect();
    let metrics: Vec<Metric> = Metric::ALL
        .into_iter()
        .filter(|&m| rows.iter().any(|s| counted(s, m).is_some()))
        .collect();
    if rows.is_empty() {
        return;
    }
    let entries = image.entries.max(1) as f64;
    let _ = writeln!(
        out,
        "\nFUSE requests per entry ({} entries; total in parentheses):\n",
        image.entries
    );
    let labels: Vec<&str> = metrics.iter().map(|m| m.label()).collect();
    let _ = writeln!(out, "| server | {} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(metrics.len()));
    // Opcode → total over the image, for the column order of the details.
    let mut opcodes: BTreeMap<&str, u64> = BTreeMap::new();
    for server in &rows {
        let mut row = format!("| {} |", server.name);
        for &metric in &metrics {
            let text = match counted(server, metric) {
                None => "—".to_string(),
                Some(Err(e)) => {
                    notes.push(format!(
                        "{} on {}, requests of {}: {e}",
                        server.name,
                        image.name,
                        metric.label()
                    ));
                    "fail".to_string()
                }
                Some(Ok(requests)) => {
                    let total: u64 = requests.values().sum();
                    for (opcode, n) in requests {
                        *opcodes.entry(opcode).or_default() += n;
                    }
                    format!("{:.2} ({})", total as f64 / entries, si(total as f64))
                }
            };
            let _ = write!(row, " {text} |");
        }
        let _ = writeln!(out, "{row}");
    }
    let mut columns: Vec<(&str, u64)> = opcodes.into_iter().collect();
    columns.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(
        out,
        "\n<details><summary>{}: requests by opcode</summary>\n",
        image.name
    );
    let _ = writeln!(
        out,
        "| server | command | total | {} |",
        columns.iter().map(|c| c.0).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(out, "|---|---|---:|{}", "---:|".repeat(columns.len()));
    for server in &rows {
        for &metric in &metrics {
            let Some(Ok(requests)) = counted(server, metric) else {
                continue;
            };
            let total: u64 = requests.values().sum();
            let cells: Vec<String> = columns
                .iter()
                .map(|(opcode, _)| {
                    requests
                        .get(*opcode)
                        .map_or("·".to_string(), u64::to_string)
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {total} | {} |",
                server.name,
                metric.label(),
                cells.join(" | ")
            );
        }
    }
    let _ = writeln!(out, "\n</details>");
}

/// Every request count: `image,entries,server,metric,opcode,count`.
pub fn requests_csv(images: &[Image], results: &Results) -> String {
    let mut out = String::from("image,entries,server,metric,opcode,count\n");
    for ((image, server, metric), requests) in &results.requests {
        let entries = images
            .iter()
            .find(|i| &i.name == image)
            .map_or(0, |i| i.entries);
        for (opcode, n) in requests.iter().flatten() {
            let _ = writeln!(
                out,
                "{image},{entries},{server},{},{opcode},{n}",
                metric.label()
            );
        }
    }
    out
}

/// Every sample: `image,entries,server,metric,run,value` (seconds, MB/s or bytes).
pub fn csv(images: &[Image], results: &Results) -> String {
    let mut out = String::from("image,entries,server,metric,run,value\n");
    for ((image, server, metric), cell) in &results.cells {
        let entries = images
            .iter()
            .find(|i| &i.name == image)
            .map_or(0, |i| i.entries);
        for (run, v) in cell.samples.iter().enumerate() {
            let _ = writeln!(
                out,
                "{image},{entries},{server},{},{run},{v}",
                metric.label()
            );
        }
    }
    out
}

const COLORS: [&str; 8] = [
    "#000000", "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf",
];

/// Startup time (median, log scale) against image entries (log scale), one line per server.
pub fn startup_svg(images: &[Image], servers: &[Server], results: &Results) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 70.0, 190.0, 20.0, 50.0);
    let series: Vec<(&Server, Vec<(f64, f64)>)> = servers
        .iter()
        .map(|server| {
            let mut points: Vec<(f64, f64)> = images
                .iter()
                .filter_map(|image| {
                    let cell = results.cells.get(&(
                        image.name.clone(),
                        server.name,
                        Metric::StartupCmdCold,
                    ))?;
                    Some((image.entries as f64, median(&cell.samples)?))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (server, points)
        })
        .collect();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let decades = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if lo > hi {
            (0.0, 1.0)
        } else {
            (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            )
        }
    };
    let (x0, x1) = decades(&mut all.iter().map(|p| p.0));
    let (y0, y1) = decades(&mut all.iter().map(|p| p.1));
    let px = |x: f64| left + (x.log10() - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y.log10() - y0) / (y1 - y0) * (h - top - bottom);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for d in x0 as i32..=x1 as i32 {
        let x = px(10f64.powi(d));
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="gainsboro"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            h - bottom,
            h - bottom + 16.0,
            si(10f64.powi(d))
        );
    }
    for d in y0 as i32..=y1 as i32 {
        let y = py(10f64.powi(d));
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="gainsboro"/><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            w - right,
            left - 6.0,
            y + 4.0,
            seconds(10f64.powi(d))
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">image entries</text>"#,
        (left + w - right) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">startup cmd cold (spawn → deep stat answers)</text>"#,
        (top + h - bottom) / 2.0
    );
    for (i, (server, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0,
            server.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn si(v: f64) -> String {
    let trimmed = |x: f64| {
        let s = format!("{x:.1}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_string)
    };
    match v {
        v if v >= 1e6 => format!("{}M", trimmed(v / 1e6)),
        v if v >= 1e3 => format!("{}k", trimmed(v / 1e3)),
        v => format!("{v}"),
    }
}

fn seconds(v: f64) -> String {
    match v {
        v if v >= 1.0 => format!("{v} s"),
        v if v >= 1e-3 => format!("{} ms", (v * 1e3).round()),
        v => format!("{} µs", (v * 1e6).round()),
    }
}

/// Per image, for each workload whose requests were counted: the measured ratio to `reference`
/// and, in parentheses, the least its round trips cost whatever the server does, as a multiple
/// of `reference`'s whole run: `requests × switch_pair / reference`, with `switch_pair` the two
/// context switches every synchronous round trip costs the CPU that asked.
pub fn floor(
    images: &[Image],
    servers: &[Server],
    results: &Results,
    reference: &str,
    switch_pair: f64,
) -> String {
    let mut out = String::new();
    for image in images {
        let median_of = |server: &str, metric: Metric| {
            results
                .cells
                .get(&(image.name.clone(), server, metric))
                .and_then(|c| median(&c.samples))
        };
        let requests_of = |server: &str, metric: Metric| -> Option<u64> {
            match results.requests.get(&(image.name.clone(), server, metric)) {
                Some(Ok(requests)) => Some(requests.values().sum()),
                _ => None,
            }
        };
        let columns: Vec<&Server> = servers
            .iter()
            .filter(|s| {
                Metric::ALL
                    .iter()
                    .any(|&m| requests_of(s.name, m).is_some())
            })
            .collect();
        let rows: Vec<Metric> = Metric::ALL
            .into_iter()
            .filter(|&m| {
                median_of(reference, m).is_some()
                    && columns.iter().any(|s| requests_of(s.name, m).is_some())
            })
            .collect();
        if columns.is_empty() || rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n### {} ({} entries)\n", image.name, image.entries);
        let names: Vec<&str> = columns.iter().map(|s| s.name).collect();
        let _ = writeln!(out, "| workload | {} |", names.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
        for metric in rows {
            let kernel = median_of(reference, metric).unwrap_or(f64::NAN);
            let mut row = format!("| {} |", metric.label());
            for server in &columns {
                let text = match (
                    median_of(server.name, metric),
                    requests_of(server.name, metric),
                ) {
                    (Some(measured), Some(requests)) => format!(
                        "{:.2}× ({:.2}×)",
                        measured / kernel,
                        requests as f64 * switch_pair / kernel
                    ),
                    _ => "—".to_string(),
                };
                let _ = write!(row, " {text} |");
            }
            let _ = writeln!(out, "{row}");
        }
    }
    out
}
