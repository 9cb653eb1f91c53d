//! Prometheus metrics: frequencies, power, energy, per-app latency, misses and
//! sub-networks, and the decisions taken. Served as text at `http://ADDR/metrics` when
//! `metrics.listen` is set; off by default. The control thread updates the values (each
//! an atomic), the `metrics` thread only encodes them on request.

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    pub frequency_hz: Family<Labels, Gauge>,
    pub power_watts: Family<Labels, FloatGauge>,
    pub energy_joules: Family<Labels, FloatCounter>,
    pub latency_seconds: Family<Labels, Histogram>,
    pub inferences: Family<Labels, Counter>,
    pub deadline_misses: Family<Labels, Counter>,
    pub subnet: Family<Labels, Gauge>,
    pub accuracy_percent: Family<Labels, FloatGauge>,
    pub deadline_seconds: Family<Labels, FloatGauge>,
    pub decisions: Family<Labels, Counter>,
    pub plans: Family<Labels, Counter>,
    pub apps: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 4 s: DNN inferences on embedded boards.
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dnngov");
        let metrics = Metrics {
            frequency_hz: Family::default(),
            power_watts: Family::default(),
            energy_joules: Family::default(),
            latency_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            inferences: Family::default(),
            deadline_misses: Family::default(),
            subnet: Family::default(),
            accuracy_percent: Family::default(),
            deadline_seconds: Family::default(),
            decisions: Family::default(),
            plans: Family::default(),
            apps: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "domain_frequency_hertz",
            "Frequency set on each governed domain",
            metrics.frequency_hz.clone(),
        );
        registry.register(
            "power_watts",
            "Power per rail (label estimated=true when computed from the platform model)",
            metrics.power_watts.clone(),
        );
        registry.register(
            "energy_joules",
            "Energy per rail since the agent started",
            metrics.energy_joules.clone(),
        );
        registry.register(
            "inference_latency_seconds",
            "Latency of each finished inference, per app",
            metrics.latency_seconds.clone(),
        );
        registry.register(
            "inferences",
            "Inferences finished, per app",
            metrics.inferences.clone(),
        );
        registry.register(
            "deadline_misses",
            "Inferences that missed their deadline, per app",
            metrics.deadline_misses.clone(),
        );
        registry.register(
            "subnet",
            "Sub-network id the agent asks each app to run",
            metrics.subnet.clone(),
        );
        registry.register(
            "accuracy_percent",
            "Accuracy of the sub-network each app runs",
            metrics.accuracy_percent.clone(),
        );
        registry.register(
            "deadline_seconds",
            "Deadline each app is governed by (operator override included)",
            metrics.deadline_seconds.clone(),
        );
        registry.register(
            "decisions",
            "Changes the agent made: kind=frequency or kind=subnet",
            metrics.decisions.clone(),
        );
        registry.register(
            "plans",
            "Plans the policy adopted, by what made them (cause=first, apps_changed, \
             hardware_changed, slow_down, controller_exhausted, gpu_below_demand, \
             cpu_saturated, gpu_saturated, predicted_break, margin_widened, app_missing, \
             serves_more, below_cpu_demand, saves_power, saving_failed, gains_accuracy, upgrade)",
            metrics.plans.clone(),
        );
        registry.register("apps", "Apps registered", metrics.apps.clone());
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Forgets an app's series when it leaves, so they do not pile up.
    pub fn remove_app(&self, labels: &Labels) {
        self.latency_seconds.remove(labels);
        self.inferences.remove(labels);
        self.deadline_misses.remove(labels);
        self.subnet.remove(labels);
        self.accuracy_percent.remove(labels);
        self.deadline_seconds.remove(labels);
    }
}

/// Labels of one app's series.
pub fn app_labels(app_id: u32, name: &str) -> Labels {
    vec![
        ("app".to_string(), name.to_string()),
        ("app_id".to_string(), app_id.to_string()),
    ]
}

pub fn label(key: &str, value: impl Into<String>) -> Labels {
    vec![(key.to_string(), value.into())]
}

/// The HTTP endpoint. Dropping it stops the thread.
pub struct MetricsServer {
    waker: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let (waker, wakee) = UnixStream::pair().context("creating the metrics waker")?;
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(listener, wakee, metrics))
            .context("starting the metrics thread")?;
        log::info!("metrics on http://{addr}/metrics");
        Ok(Self {
            waker,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.waker.write_all(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, wakee: UnixStream, metrics: Arc<Metrics>) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wakee.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        if let Ok((stream, _)) = listener.accept() {
            if let Err(e) = answer(stream, &metrics) {
                log::debug!("metrics request failed: {e}");
            }
        }
    }
}

/// One request, one answer, then close: enough for a scraper, and a slow client cannot
/// hold the thread for more than the timeouts.
fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = [0u8; 2048];
    let mut len = 0;
    // Read up to the end of the request line.
    while len < request.len() {
        let n = stream.read(&mut request[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if request[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&request[..len]);
    let mut words = line.split_whitespace();
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (Some("GET"), Some(_)) => (
            "404 Not Found",
            "text/plain",
            "dnngov serves /metrics only\n".to_string(),
        ),
        _ => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_with_its_labels() {
        let metrics = Metrics::new();
        metrics
            .frequency_hz
            .get_or_create(&label("domain", "cpufreq policy0"))
            .set(1_190_400_000);
        let app = app_labels(3, "detector");
        metrics.latency_seconds.get_or_create(&app).observe(0.05);
        metrics.inferences.get_or_create(&app).inc();
        let text = metrics.encode();
        assert!(
            text.contains("dnngov_domain_frequency_hertz{domain=\"cpufreq policy0\"} 1190400000"),
            "{text}"
        );
        assert!(
            text.contains("dnngov_inferences_total{app=\"detector\",app_id=\"3\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dnngov_inference_latency_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        metrics.remove_app(&app);
        assert!(!metrics.encode().contains("detector"));
    }

    #[test]
    fn the_endpoint_serves_metrics_and_refuses_other_paths() {
        let metrics = Arc::new(Metrics::new());
        metrics.apps.set(2);
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = MetricsServer::start(addr, metrics).unwrap();
        let get = |path: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            reply
        };
        let reply = get("/metrics");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.contains("dnngov_apps 2"), "{reply}");
        assert!(get("/").starts_with("HTTP/1.1 404"));
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "the server stops");
    }
}
