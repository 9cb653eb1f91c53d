//! dnngovd's configuration: `/etc/dnngov/config.toml`, every key optional, flags on top.
//!
//! An unknown key or a bad value is an error that names the key and its line, so a typo
//! never turns into a setting silently ignored. `dist/config.toml` is the documented
//! default file; a test checks that it parses to exactly [`Config::default`].

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where dnngovd looks for its configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dnngov/config.toml";

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub control: ControlConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub sysfs_root: PathBuf,
    pub socket: PathBuf,
    pub admin_socket: PathBuf,
    /// Group given both sockets (mode 0660): its members may register apps and read the
    /// agent's status.
    pub group: String,
    /// Group whose members may also change things through the admin socket (hold,
    /// release, any app's target); `""`: only root and the agent's own user.
    pub admin_group: String,
    pub state_dir: PathBuf,
    /// A board description (`platforms/*.toml`): seeds the policy's power model, and
    /// gives a power estimate where the board has no sensor.
    pub platform: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/"),
            socket: PathBuf::from(governor_proto::DEFAULT_SOCKET_PATH),
            admin_socket: PathBuf::from(crate::admin::DEFAULT_ADMIN_SOCKET),
            group: "dnngov".into(),
            admin_group: "dnngov-admin".into(),
            state_dir: PathBuf::from("/run/dnngov"),
            platform: None,
        }
    }
}

impl AgentConfig {
    /// Where the saved governors and limits live.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("saved-state.json")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    pub tick_ms: u64,
    pub optimiser_period_ms: u64,
    pub objective: Objective,
    /// While an app uses the GPU, the GPU and memory clocks are not planned below this
    /// fraction of their highest unless a power cap leaves no other way to serve every app
    /// (`policy::Config::gpu_floor`).
    pub gpu_floor: f64,
    /// With the energy objective, the fraction of power a plan may spend above the least
    /// to run more accurate sub-networks (`policy::OptimiserConfig::tie_tolerance`).
    pub tie_tolerance: f64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            tick_ms: 10,
            optimiser_period_ms: 500,
            objective: Objective::Energy,
            gpu_floor: dnngov_policy::Config::default().gpu_floor,
            tie_tolerance: dnngov_policy::OptimiserConfig::default().tie_tolerance,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Meet every target with the least energy.
    #[default]
    Energy,
    /// The highest priority-weighted accuracy within the power budget.
    Accuracy,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus exposition address; off when `None`.
    pub listen: Option<SocketAddr>,
}

/// A key whose value must be from 0 to 1 (`what` says of what): the key and why where not.
fn fraction(
    key: &'static str,
    value: f64,
    what: &str,
) -> std::result::Result<(), (&'static str, String)> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err((
            key,
            format!("{key} is {value}; it must be from 0 to 1 ({what})"),
        ))
    }
}

impl Config {
    /// Parses `text`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if let Err((key, message)) = config.validate() {
            let (section, name) = key.split_once('.').unwrap_or(("", key));
            return Err(match line_of(text, section, name) {
                Some(line) => anyhow::anyhow!("{origin}, line {line}: {message}"),
                None => anyhow::anyhow!("{origin}: {message}"),
            });
        }
        Ok(config)
    }

    /// Loads `path`. A missing file at the default path means the defaults; a missing
    /// file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The key at fault and why.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let control = &self.control;
        if !(1..=1000).contains(&control.tick_ms) {
            return Err((
                "control.tick_ms",
                format!(
                    "control.tick_ms is {}; it must be from 1 to 1000",
                    control.tick_ms
                ),
            ));
        }
        if control.optimiser_period_ms < control.tick_ms || control.optimiser_period_ms > 60_000 {
            return Err((
                "control.optimiser_period_ms",
                format!(
                    "control.optimiser_period_ms is {}; it must be from control.tick_ms ({}) to 60000",
                    control.optimiser_period_ms, control.tick_ms
                ),
            ));
        }
        fraction(
            "control.gpu_floor",
            control.gpu_floor,
            "a fraction of the highest clock",
        )?;
        fraction(
            "control.tie_tolerance",
            control.tie_tolerance,
            "a fraction of the least power",
        )?;
        if let Some(addr) = self.metrics.listen {
            if !addr.ip().is_loopback() {
                log::warn!(
                    "metrics.listen = {addr} is reachable from other machines; \
                     the metrics carry no secrets but consider 127.0.0.1"
                );
            }
        }
        Ok(())
    }
}

/// The line (from 1) where `key` is set inside `[section]`, for error messages.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section && line.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return Some(index + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_file_is_the_default() {
        let text = include_str!("../../dist/config.toml");
        assert_eq!(
            Config::parse(text, "dist/config.toml").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn an_empty_file_gives_defaults() {
        assert_eq!(Config::parse("", "empty").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "[control]\ntick_ms = 20\ntick_mss = 5\n";
        let error = format!("{:#}", Config::parse(text, "test.toml").unwrap_err());
        assert!(error.contains("tick_mss"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("test.toml"), "{error}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        for (text, key) in [
            ("[control]\ntick_ms = 0\n", "control.tick_ms"),
            (
                "[control]\ntick_ms = 50\noptimiser_period_ms = 10\n",
                "control.optimiser_period_ms",
            ),
            ("[control]\nobjective = \"speed\"\n", "speed"),
            ("[control]\ngpu_floor = 1.5\n", "control.gpu_floor"),
            ("[control]\ntie_tolerance = -0.1\n", "control.tie_tolerance"),
            ("[metrics]\nlisten = \"not an address\"\n", "listen"),
            ("[agent]\nsocket = 5\n", "socket"),
        ] {
            let error = format!("{:#}", Config::parse(text, "t.toml").unwrap_err());
            assert!(error.contains(key), "{text}: {error}");
            assert!(error.contains("line "), "{text}: {error}");
        }
    }

    #[test]
    fn values_are_read() {
        let text = "[agent]\nsysfs_root = \"/tmp/board\"\n[control]\nobjective = \"accuracy\"\ngpu_floor = 0.0\ntie_tolerance = 0.02\n[metrics]\nlisten = \"127.0.0.1:9479\"\n";
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.agent.sysfs_root, PathBuf::from("/tmp/board"));
        assert_eq!(config.control.objective, Objective::Accuracy);
        assert_eq!(config.control.gpu_floor, 0.0);
        assert_eq!(config.control.tie_tolerance, 0.02);
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9479".parse().unwrap())
        );
        assert_eq!(
            config.agent.state_file(),
            PathBuf::from("/run/dnngov/saved-state.json")
        );
    }

    #[test]
    fn a_missing_default_file_is_fine_and_a_missing_named_file_is_not() {
        let missing = Path::new("/nonexistent/dnngov.toml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        assert!(Config::load(missing, true).is_err());
    }
}
