"""Tests of daemon.web.metrics and deploy/prometheus: names, bounded labels, counters, a Prometheus scrape.

Each test builds its own :class:`~prometheus_client.CollectorRegistry`. The tests marked
as needing ``prometheus`` or ``promtool`` skip when the binaries are missing (install them
with ``scripts/install-system-deps.sh``), except under CI, where they fail.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

import daemon.web.metrics
from daemon.store.ledger import CLASSIFIER_STATUSES, FileState, Ledger, ResultRecord, ResultStatus
from daemon.web.http import HttpServer
from daemon.web.metrics import (
    CONFIRMATION_KINDS,
    DRIFT_STREAMS,
    FILE_OUTCOMES,
    RETRAIN_OUTCOMES,
    Metrics,
)
from tests.prometheus import require_tool, running_prometheus

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "mpwatch-dashboard.json"
NOW = 1_700_000_000.0
SHA = "ab" * 32


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry exposes (``_total``, ``_bucket``, ``_info``, ...)."""
    return {sample.name for family in registry.collect() for sample in family.samples}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(
        registry,
        inbox_roots=["ftir", "raman"],
        known_labels=["PE", "PP", "PS"],
        members=["subknn", "cnn"],
        version="1.2.3",
    )


def exercise(metrics: Metrics) -> None:
    """Call every method once, so every metric has data."""
    metrics.file_finished("done", now=NOW, seconds=0.02)
    metrics.file_finished("duplicate", now=NOW)
    metrics.observe_result("known", "PE")
    metrics.observe_result("unknown")
    metrics.observe_carbonyl_index("PP", 0.4)
    metrics.member_disagreement()
    metrics.set_queue_depth(3)
    metrics.set_watcher_up("ftir", up=True)
    metrics.rescan_recovered(2)
    metrics.set_library({"PE": 40, "PP": 35, "PS": 12}, version=4)
    metrics.set_model(model_version="lib4.r1", library_version=4, members=["subknn", "cnn"])
    metrics.confirmation("new_class")
    metrics.observe_time_to_serve(0.8)
    metrics.set_rolling_accuracy("overall", 0.97)
    metrics.set_rolling_accuracy("PE", 1.0)
    metrics.drift_detected("top1_r")
    metrics.retrain_finished("promoted", seconds=290.0)
    metrics.set_member_accuracy("cnn", 0.93)


class TestNaming:
    def test_every_metric_has_the_prefix(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        exercise(metrics)
        names = sample_names(registry)
        assert names
        assert all(name.startswith("mpwatch_") for name in names)

    def test_counters_end_in_total_and_only_counters_do(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        for family in registry.collect():
            if family.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
            else:
                assert not family.name.endswith("_total"), family.name

    def test_durations_are_in_seconds(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        histograms = {f.name for f in registry.collect() if f.type == "histogram"}
        assert {
            "mpwatch_processing_seconds",
            "mpwatch_time_to_serve_seconds",
            "mpwatch_retrain_seconds",
        } <= histograms
        assert not any(
            re.search(r"_(ms|milliseconds|minutes|hours)\b", name) for name in sample_names(registry)
        )

    def test_promtool_finds_no_problems(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        promtool = require_tool("promtool")
        exercise(metrics)
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=generate_latest(registry),
            capture_output=True,
            timeout=60,
            check=False,
        )
        problems = (result.stdout + result.stderr).decode()
        assert result.returncode == 0, problems
        assert problems.strip() == "", problems

    def test_the_docstring_lists_every_metric(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        documented = set(re.findall(r"``(mpwatch_[a-z0-9_]+)``", daemon.web.metrics.__doc__ or ""))
        exposed = set()
        for family in registry.collect():
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            exposed.add(family.name + suffix)
        assert exposed == documented


class TestInitialisation:
    def test_fixed_label_sets_exist_at_zero(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        for outcome in FILE_OUTCOMES:
            assert value(registry, "mpwatch_files_total", outcome=outcome) == 0
        for kind in CONFIRMATION_KINDS:
            assert value(registry, "mpwatch_confirmations_total", kind=kind) == 0
        for stream in DRIFT_STREAMS:
            assert value(registry, "mpwatch_drift_detected_total", stream=stream) == 0
            assert value(registry, "mpwatch_drift_active", stream=stream) == 0
        for outcome in RETRAIN_OUTCOMES:
            assert value(registry, "mpwatch_retrain_total", outcome=outcome) == 0
        for state in FileState:
            assert value(registry, "mpwatch_ledger_files", state=str(state)) == 0
        assert value(registry, "mpwatch_review_queue_open") == 0
        assert value(registry, "mpwatch_rescan_recovered_files_total") == 0
        assert value(registry, "mpwatch_member_disagreements_total") == 0
        assert value(registry, "mpwatch_processing_seconds_count") == 0

    def test_classification_series_exist_for_every_status_and_known_label(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        for status in CLASSIFIER_STATUSES:
            assert value(registry, "mpwatch_classifications_total", status=str(status), label="none") == 0
        for label in ("PE", "PP", "PS", "other"):
            assert value(registry, "mpwatch_classifications_total", status="known", label=label) == 0
            assert value(registry, "mpwatch_carbonyl_index_count", polymer=label) == 0

    def test_configured_roots_and_members(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        assert value(registry, "mpwatch_watcher_up", root="ftir") == 0
        assert value(registry, "mpwatch_watcher_up", root="raman") == 0
        for member in ("subknn", "cnn"):
            accuracy = value(registry, "mpwatch_member_accuracy_ratio", member=member)
            assert accuracy is not None and math.isnan(accuracy)
        overall = value(registry, "mpwatch_rolling_accuracy_ratio", scope="overall")
        assert overall is not None and math.isnan(overall)

    def test_info_metrics(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        assert value(registry, "mpwatch_build_info", version="1.2.3") == 1
        none = {"model_version": "none", "library_version": "none", "members": "none"}
        assert registry.get_sample_value("mpwatch_model_info", none) == 1

    def test_build_version_defaults_to_the_installed_distribution(self, registry: CollectorRegistry) -> None:
        Metrics(registry)
        (family,) = (f for f in registry.collect() if f.name == "mpwatch_build")
        assert family.samples[0].labels["version"]

    def test_registries_are_independent(self) -> None:
        first, second = CollectorRegistry(), CollectorRegistry()
        Metrics(first).file_finished("done", now=NOW)
        Metrics(second)
        assert value(first, "mpwatch_files_total", outcome="done") == 1
        assert value(second, "mpwatch_files_total", outcome="done") == 0

    def test_max_labels_must_be_positive(self, registry: CollectorRegistry) -> None:
        with pytest.raises(ValueError, match="max_labels"):
            Metrics(registry, max_labels=0)


class TestBoundedLabels:
    def test_a_label_outside_the_library_counts_as_other(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.observe_result("known", "PE")
        metrics.observe_result("known", "particle_0001.spa")
        metrics.observe_result("known", "PVC")
        assert value(registry, "mpwatch_classifications_total", status="known", label="PE") == 1
        assert value(registry, "mpwatch_classifications_total", status="known", label="other") == 2
        assert value(registry, "mpwatch_classifications_total", status="known", label="PVC") is None

    def test_unknown_and_low_quality_never_carry_a_label(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.observe_result("unknown", "PE")
        metrics.observe_result(ResultStatus.LOW_QUALITY)
        assert value(registry, "mpwatch_classifications_total", status="unknown", label="none") == 1
        assert value(registry, "mpwatch_classifications_total", status="low_quality", label="none") == 1
        assert value(registry, "mpwatch_classifications_total", status="unknown", label="PE") is None

    def test_an_unknown_status_is_refused(self, metrics: Metrics) -> None:
        with pytest.raises(ValueError):
            metrics.observe_result("maybe", "PE")

    def test_labels_beyond_the_cap_count_as_other(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        metrics = Metrics(registry, known_labels=["PE", "PP"], max_labels=3)
        with caplog.at_level(logging.WARNING, logger="daemon.web.metrics"):
            admitted = metrics.set_known_labels(["PE", "PS", "PVC", "PET"])
        assert admitted == {"PE", "PP", "PS"}
        assert "at most 3 polymer labels" in caplog.text
        metrics.observe_result("known", "PVC")
        assert value(registry, "mpwatch_classifications_total", status="known", label="other") == 1
        labels = {
            s.labels["label"]
            for f in registry.collect()
            if f.name == "mpwatch_classifications"
            for s in f.samples
        }
        assert labels <= {"PE", "PP", "PS", "none", "other"}

    def test_a_model_swap_adds_series_and_keeps_old_ones(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.observe_result("known", "PS")
        metrics.set_known_labels(["PE", "PP", "PA"])
        assert value(registry, "mpwatch_classifications_total", status="known", label="PA") == 0
        assert value(registry, "mpwatch_classifications_total", status="known", label="PS") == 1

    def test_carbonyl_index_is_bounded_by_polymer(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.observe_carbonyl_index("PE", 0.3)
        metrics.observe_carbonyl_index("cellulose", 1.1)
        assert value(registry, "mpwatch_carbonyl_index_count", polymer="PE") == 1
        assert value(registry, "mpwatch_carbonyl_index_count", polymer="other") == 1
        assert value(registry, "mpwatch_carbonyl_index_bucket", polymer="PE", le="0.3") == 1
        assert value(registry, "mpwatch_carbonyl_index_bucket", polymer="PE", le="0.2") == 0

    def test_rolling_accuracy_only_for_tracked_scopes(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.set_rolling_accuracy("overall", 0.9)
        metrics.set_rolling_accuracy("PP", 0.8)
        metrics.set_rolling_accuracy("not-a-class", 0.5)
        assert value(registry, "mpwatch_rolling_accuracy_ratio", scope="overall") == pytest.approx(0.9)
        assert value(registry, "mpwatch_rolling_accuracy_ratio", scope="PP") == pytest.approx(0.8)
        assert value(registry, "mpwatch_rolling_accuracy_ratio", scope="not-a-class") is None
        assert value(registry, "mpwatch_rolling_accuracy_ratio", scope="other") is None

    @pytest.mark.parametrize("accuracy", [-0.1, 1.5, 97.0])
    def test_accuracies_are_ratios(self, metrics: Metrics, accuracy: float) -> None:
        with pytest.raises(ValueError, match="ratio"):
            metrics.set_rolling_accuracy("overall", accuracy)
        with pytest.raises(ValueError, match="ratio"):
            metrics.set_member_accuracy("cnn", accuracy)

    def test_fixed_sets_refuse_other_values(self, metrics: Metrics) -> None:
        with pytest.raises(ValueError, match="file outcome"):
            metrics.file_finished("skipped", now=NOW)
        with pytest.raises(ValueError, match="inbox root"):
            metrics.set_watcher_up("/home/someone/inbox", up=True)
        with pytest.raises(ValueError, match="confirmation kind"):
            metrics.confirmation("maybe")
        with pytest.raises(ValueError, match="drift stream"):
            metrics.drift_detected("temperature")
        with pytest.raises(ValueError, match="retrain outcome"):
            metrics.retrain_finished("crashed", seconds=1.0)
        with pytest.raises(ValueError, match="ensemble member"):
            metrics.set_member_accuracy("svm", 0.5)

    def test_members_can_be_declared_later(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.set_model(model_version="lib5.r1", library_version=5, members=["subknn", "cnn", "pls"])
        metrics.set_member_accuracy("pls", 0.7)
        assert value(registry, "mpwatch_member_accuracy_ratio", member="pls") == pytest.approx(0.7)


class TestCounters:
    def test_file_finished(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.file_finished("done", now=NOW, seconds=0.004)
        metrics.file_finished("done", now=NOW + 1, seconds=0.3)
        metrics.file_finished("failed", now=NOW + 2)
        assert value(registry, "mpwatch_files_total", outcome="done") == 2
        assert value(registry, "mpwatch_files_total", outcome="failed") == 1
        assert value(registry, "mpwatch_processing_seconds_count") == 2
        assert value(registry, "mpwatch_processing_seconds_sum") == pytest.approx(0.304)
        assert value(registry, "mpwatch_processing_seconds_bucket", le="0.005") == 1
        assert value(registry, "mpwatch_processing_seconds_bucket", le="0.25") == 1
        assert value(registry, "mpwatch_processing_seconds_bucket", le="10.0") == 2
        assert value(registry, "mpwatch_last_processed_timestamp_seconds") == NOW + 2

    def test_processing_buckets_span_a_millisecond_to_ten_seconds(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        bounds = sorted(
            float(s.labels["le"])
            for f in registry.collect()
            if f.name == "mpwatch_processing_seconds"
            for s in f.samples
            if s.name.endswith("_bucket")
        )
        assert bounds[0] == 0.001
        assert bounds[-2] == 10.0
        assert math.isinf(bounds[-1])

    def test_queue_and_watchers(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.set_queue_depth(17)
        metrics.set_watcher_up("raman", up=True)
        metrics.rescan_recovered()
        metrics.rescan_recovered(3)
        assert value(registry, "mpwatch_queue_depth") == 17
        assert value(registry, "mpwatch_watcher_up", root="raman") == 1
        assert value(registry, "mpwatch_watcher_up", root="ftir") == 0
        assert value(registry, "mpwatch_rescan_recovered_files_total") == 4
        metrics.set_watcher_up("raman", up=False)
        assert value(registry, "mpwatch_watcher_up", root="raman") == 0
        with pytest.raises(ValueError):
            metrics.set_queue_depth(-1)

    def test_online_growth(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.confirmation("new_class")
        metrics.confirmation("added")
        metrics.confirmation("added")
        metrics.observe_time_to_serve(0.2)
        assert value(registry, "mpwatch_confirmations_total", kind="added") == 2
        assert value(registry, "mpwatch_confirmations_total", kind="new_class") == 1
        assert value(registry, "mpwatch_time_to_serve_seconds_bucket", le="0.1") == 0
        assert value(registry, "mpwatch_time_to_serve_seconds_bucket", le="0.25") == 1
        assert value(registry, "mpwatch_time_to_serve_seconds_bucket", le="30.0") == 1

    def test_drift_is_counted_and_flagged_until_cleared(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.drift_detected("unknown_rate")
        metrics.drift_detected("unknown_rate")
        assert value(registry, "mpwatch_drift_detected_total", stream="unknown_rate") == 2
        assert value(registry, "mpwatch_drift_active", stream="unknown_rate") == 1
        assert value(registry, "mpwatch_drift_active", stream="top1_r") == 0
        metrics.set_drift_active("unknown_rate", active=False)
        assert value(registry, "mpwatch_drift_active", stream="unknown_rate") == 0
        assert value(registry, "mpwatch_drift_detected_total", stream="unknown_rate") == 2

    def test_cnn_member(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.retrain_finished("kept_champion", seconds=310.0)
        metrics.retrain_finished("failed", seconds=12.0)
        metrics.set_member_accuracy("cnn", 0.91)
        metrics.member_disagreement()
        assert value(registry, "mpwatch_retrain_total", outcome="kept_champion") == 1
        assert value(registry, "mpwatch_retrain_total", outcome="failed") == 1
        assert value(registry, "mpwatch_retrain_seconds_count") == 2
        assert value(registry, "mpwatch_retrain_seconds_bucket", le="600.0") == 2
        assert value(registry, "mpwatch_member_accuracy_ratio", member="cnn") == pytest.approx(0.91)
        assert value(registry, "mpwatch_member_disagreements_total") == 1


class TestLibraryAndModel:
    def test_library_per_class_with_overflow_and_stale_labels(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.set_library({"PE": 40, "PP": 30, "fur": 5, "cellulose": 7}, version=3)
        assert value(registry, "mpwatch_library_spectra", label="PE") == 40
        assert value(registry, "mpwatch_library_spectra", label="other") == 12
        assert value(registry, "mpwatch_library_spectra", label="fur") is None
        assert value(registry, "mpwatch_library_version") == 3
        metrics.set_library({"PE": 41}, version=4)
        assert value(registry, "mpwatch_library_spectra", label="PE") == 41
        assert value(registry, "mpwatch_library_spectra", label="PP") is None
        assert value(registry, "mpwatch_library_spectra", label="other") == 0
        assert value(registry, "mpwatch_library_version") == 4

    def test_model_info(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.set_model(model_version="lib4.r2", library_version=4, members=["subknn", "cnn"])
        labels = {"model_version": "lib4.r2", "library_version": "4", "members": "subknn,cnn"}
        assert registry.get_sample_value("mpwatch_model_info", labels) == 1
        none = {"model_version": "none", "library_version": "none", "members": "none"}
        assert registry.get_sample_value("mpwatch_model_info", none) is None


class TestLedgerCollector:
    @pytest.fixture
    def ledger(self) -> Iterator[Ledger]:
        ledger = Ledger(":memory:")
        yield ledger
        ledger.close()

    def test_counts_are_read_at_scrape_time(
        self, registry: CollectorRegistry, metrics: Metrics, ledger: Ledger
    ) -> None:
        metrics.attach_ledger(ledger)
        ledger.observe("/inbox/a.spa", size=10, mtime=1.0, now=NOW)
        ledger.observe("/inbox/b.spa", size=10, mtime=1.0, now=NOW)
        assert value(registry, "mpwatch_ledger_files", state="seen") == 2
        ledger.mark_pending("/inbox/a.spa", SHA, now=NOW)
        item = ledger.claim_next(now=NOW)
        assert item is not None
        record = ResultRecord(spectrum_index=0, status=ResultStatus.UNKNOWN, model_version="m1")
        ledger.complete(item.sha256, [record], now=NOW)
        assert value(registry, "mpwatch_ledger_files", state="seen") == 1
        assert value(registry, "mpwatch_ledger_files", state="done") == 1
        assert value(registry, "mpwatch_ledger_files", state="quarantined") == 0
        assert value(registry, "mpwatch_review_queue_open") == 1

    def test_an_unreadable_ledger_leaves_the_rest_of_the_scrape_intact(
        self, registry: CollectorRegistry, metrics: Metrics, caplog: pytest.LogCaptureFixture
    ) -> None:
        closed = Ledger(":memory:")
        closed.close()
        metrics.attach_ledger(closed)
        with caplog.at_level(logging.WARNING, logger="daemon.web.collectors"):
            exposition = generate_latest(registry).decode()
        assert "mpwatch_files_total" in exposition
        assert "mpwatch_ledger_files{" not in exposition
        assert "ledger counts unavailable" in caplog.text
        metrics.attach_ledger(None)
        assert value(registry, "mpwatch_ledger_files", state="done") == 0


def _mpwatch_names(expression: str) -> set[str]:
    return set(re.findall(r"\bmpwatch_[a-zA-Z0-9_]+", expression))


def _dashboard_expressions(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("expr", "definition") and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_dashboard_expressions(item))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dashboard_expressions(item))
    return found


class TestDeploy:
    """The Prometheus configuration, alert rules and Grafana dashboard in deploy/."""

    @pytest.fixture
    def known_names(self, registry: CollectorRegistry, metrics: Metrics) -> set[str]:
        exercise(metrics)
        return sample_names(registry)

    @pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
    def test_prometheus_config_is_valid(self, config: str) -> None:
        promtool = require_tool("promtool")
        result = subprocess.run(
            [promtool, "check", "config", str(PROMETHEUS_DIR / config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_scrape_config_targets_the_daemon(self) -> None:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
        (job,) = config["scrape_configs"]
        assert job["job_name"] == "mpwatch"
        assert job["static_configs"][0]["targets"] == ["localhost:9108"]
        assert config["global"]["scrape_interval"] == "15s"

    def test_alert_rules_are_valid_and_their_unit_tests_pass(self) -> None:
        promtool = require_tool("promtool")
        for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
            result = subprocess.run(
                [promtool, *command],
                cwd=PROMETHEUS_DIR,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stdout + result.stderr

    def test_alerts_name_only_existing_metrics(self, known_names: set[str]) -> None:
        rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
        alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
        assert set(alerts) == {
            "MpwatchDown",
            "MpwatchStalled",
            "MpwatchErrorRate",
            "MpwatchUnknownRateRising",
            "MpwatchWatcherDown",
            "MpwatchStorageFailing",
            "MpwatchDriftDetected",
        }
        for name, rule in alerts.items():
            assert {"summary", "description"} <= set(rule["annotations"]), name
            assert _mpwatch_names(rule["expr"]) <= known_names, name

    def test_dashboard_queries_name_only_existing_metrics(self, known_names: set[str]) -> None:
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        assert dashboard["schemaVersion"] >= 36
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        expressions = _dashboard_expressions(dashboard)
        assert len(expressions) >= 20
        unknown = {name for expr in expressions for name in _mpwatch_names(expr)} - known_names
        assert not unknown, f"the dashboard queries metrics that do not exist: {sorted(unknown)}"
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
        for panel in panels:
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]

    def test_dashboard_queries_parse_as_promql(self, tmp_path: Path) -> None:
        promtool = require_tool("promtool")
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        grafana_variables = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*"}
        rules = []
        for index, expression in enumerate(_dashboard_expressions(dashboard)):
            if expression.startswith("label_values("):
                continue
            for variable, replacement in grafana_variables.items():
                expression = expression.replace(variable, replacement)
            rules.append({"record": f"dashboard:query_{index}:value", "expr": expression})
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestRealPrometheus:
    """A real Prometheus server scrapes the metrics endpoint (the whole daemon: tests/test_daemon.py)."""

    def test_prometheus_scrapes_the_counter(self, tmp_path: Path, registry: CollectorRegistry) -> None:
        metrics = Metrics(registry, inbox_roots=["ftir"], known_labels=["PE"])
        with HttpServer("127.0.0.1", 0, registry=registry) as server:
            target = f"127.0.0.1:{server.port}"
            for _ in range(3):
                metrics.file_finished("done", now=time.time(), seconds=0.01)
            with running_prometheus(tmp_path, [target]) as prometheus:
                scraped = prometheus.wait_for_value('mpwatch_files_total{outcome="done"}', expected=3.0)
        assert scraped["metric"] == {
            "__name__": "mpwatch_files_total",
            "instance": target,
            "job": "mpwatch",
            "outcome": "done",
        }
