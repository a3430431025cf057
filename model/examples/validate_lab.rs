//! Validates a lab config and prints it as labnet sees it, or the error naming file and field:
//! `cargo run -p labnet-model --example validate_lab [FILE.toml]` (default: the embedded lab).
fn main() {
    let lab = match std::env::args().nth(1) {
        Some(file) => std::fs::read_to_string(&file)
            .map_err(|e| format!("{file}: {e}"))
            .and_then(|text| model::config::parse(&text, &file, None).map_err(|e| e.to_string())),
        None => Ok(model::Lab::embedded_default()),
    };
    match lab {
        Ok(lab) => match serde_json::to_string_pretty(&lab) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
