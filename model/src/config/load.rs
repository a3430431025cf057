//! Finding and reading a lab's config: `--config FILE`, `/etc/labnet/LAB.toml`, the file a
//! running lab was built from, or the embedded default; and the checks that need the file
//! system (key files present and private).
use super::*;

/// Where lab configs live: `LABNET_CONFIG_DIR`, else [`CONFIG_DIR`].
pub fn config_dir() -> PathBuf {
    std::env::var_os("LABNET_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CONFIG_DIR))
}

impl Lab {
    /// The embedded default lab.
    pub fn embedded_default() -> Lab {
        parse(DEFAULT_LAB_TOML, "<embedded default>", None).expect("embedded default lab is valid")
    }

    /// Loads a lab: `--config FILE` if given, else `/etc/labnet/LAB.toml`, else (for the
    /// default lab name or no name) the embedded default.
    pub fn load(lab: Option<&str>, config: Option<&Path>) -> Result<Lab, ConfigError> {
        let dir = config_dir();
        if let Some(path) = config {
            return load_file(path, lab);
        }
        let default = Lab::embedded_default();
        let name = lab.unwrap_or(&default.name);
        let path = dir.join(format!("{name}.toml"));
        if path.exists() {
            return load_file(&path, Some(name));
        }
        // A lab brought up with `--config FILE`: later commands find that file through the
        // lab's state record, so `labnet leases LAB` works without repeating --config.
        if let Some(source) = running_lab_source(name) {
            return load_file(&source, Some(name));
        }
        if name == default.name {
            return Ok(default);
        }
        Err(ConfigError::NoSuchLab {
            lab: name.to_string(),
            path: path.display().to_string(),
            default: default.name,
        })
    }

    /// Checks that need the file system (key file present, not group/other readable).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        // The peering key is made by labnet when missing; one that exists must be private.
        if let Some(p) = &self.peering {
            if let Ok(meta) = std::fs::metadata(&p.private_key_file) {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(ConfigError::Field {
                        file: self.source.clone(),
                        field: "peering.private_key_file".into(),
                        message: format!(
                            "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                            p.private_key_file.display(),
                            meta.permissions().mode() & 0o777
                        ),
                    });
                }
            }
        }
        if let Uplink::Wireguard(wg) = &self.uplink {
            let f = &wg.private_key_file;
            let field = "uplink.private_key_file".to_string();
            let meta = std::fs::metadata(f).map_err(|e| ConfigError::Field {
                file: self.source.clone(),
                field: field.clone(),
                message: if is_base64_key(&f.display().to_string()) {
                    // The key itself where its file's path belongs: not echoed.
                    format!(
                        "{e}; the value looks like a key, not a path (name the file holding it)"
                    )
                } else {
                    format!("cannot read {}: {e}", f.display())
                },
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(ConfigError::Field {
                    file: self.source.clone(),
                    field,
                    message: format!(
                        "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                        f.display(),
                        meta.permissions().mode() & 0o777
                    ),
                });
            }
            read_private_key(f).map_err(|e| ConfigError::Field {
                file: self.source.clone(),
                field: "uplink.private_key_file".into(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// The config file a running lab was built from, per /run/labnet/LAB.json.
pub(super) fn running_lab_source(lab: &str) -> Option<PathBuf> {
    let state = crate::state::LabState::load(lab).ok()??;
    let source = PathBuf::from(state.config?.source);
    source.is_file().then_some(source)
}

pub(super) fn load_file(path: &Path, lab: Option<&str>) -> Result<Lab, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let mut parsed = parse(&text, &file, lab)?;
    // Absolute, so the lab's state record leads later commands back to this file.
    if let Ok(abs) = std::fs::canonicalize(path) {
        parsed.source = abs.display().to_string();
    }
    Ok(parsed)
}
