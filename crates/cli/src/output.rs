//! Output in the conventions of kubectl.

/// Prints a Table response the way kubectl does: upper-case headers, aligned columns.
pub fn print_table(table: &serde_json::Value, wide: bool) {
    let cols: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_uppercase()))
        .collect();
    let rows: Vec<Vec<String>> = table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            cols.iter()
                .map(|(i, _)| match &r["cells"][*i] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|(_, h)| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(cols.iter().map(|(_, h)| h.as_str()).collect());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
