"""The integration suite's behavioural tests, collected again here so that the
parametrised ``server`` fixture of this directory runs each on both backends. Only tests
of what both backends promise are listed; tests of embedded-only features (snapshots,
journal, HTTP push, the dashboard) stay in tests/integration."""

from __future__ import annotations

from tests.integration.test_api import (
    test_bad_input_gets_a_clear_error_and_changes_nothing,
    test_bad_queue_names_are_invalid_argument,
    test_cancel_pending_job_removes_it,
    test_queue_settings_change_live,
    test_reprioritize_moves_a_pending_job_to_the_front,
    test_submit_batch_is_all_or_nothing,
    test_submit_get_and_list_in_dispatch_order,
    test_wait_returns_the_job_as_it_is_when_the_timeout_passes,
)
from tests.integration.test_error_details import (
    test_a_bad_job_in_a_batch_names_its_field,
    test_a_lone_submit_names_the_field_of_its_job,
    test_a_submit_during_a_drain_is_draining_with_a_retry_delay,
    test_a_work_stream_refusal_carries_details,
    test_an_oversized_payload_is_payload_too_large_without_a_retry,
    test_an_unknown_job_is_job_not_found,
    test_max_pending_is_queue_full_with_a_retry_delay,
    test_update_queue_fields_are_rooted_in_the_queue,
)
from tests.integration.test_leases import (
    stub,
    test_expired_lease_requeues_and_fences_the_late_result,
    test_heartbeat_extends_the_lease,
)
from tests.integration.test_policies import (
    test_delayed_job_waits_scheduled_then_runs,
    test_exhausted_retries_end_dead_and_retry_job_revives,
    test_idempotency_key_returns_the_first_job,
    test_max_pending_refuses_the_whole_batch,
    test_ordering_key_runs_one_at_a_time_in_submit_order,
    test_permanent_error_under_a_policy_is_dead_at_once,
    test_purge_forgets_finished_jobs,
    test_rate_limits_dispatches,
    test_retry_succeeds_on_the_third_attempt,
    test_slot_shares_width_and_times_out,
    test_ttl_expires_a_job_that_could_not_run,
)
from tests.integration.test_worker_flow import (
    test_cancel_underway_job_reaches_the_worker,
    test_results_errors_and_hooks,
    test_width_caps_underway_jobs_across_workers,
    test_width_zero_dispatches_nothing,
)

__all__ = [
    "stub",
    "test_a_bad_job_in_a_batch_names_its_field",
    "test_a_lone_submit_names_the_field_of_its_job",
    "test_a_submit_during_a_drain_is_draining_with_a_retry_delay",
    "test_a_work_stream_refusal_carries_details",
    "test_an_oversized_payload_is_payload_too_large_without_a_retry",
    "test_an_unknown_job_is_job_not_found",
    "test_bad_input_gets_a_clear_error_and_changes_nothing",
    "test_bad_queue_names_are_invalid_argument",
    "test_cancel_pending_job_removes_it",
    "test_cancel_underway_job_reaches_the_worker",
    "test_delayed_job_waits_scheduled_then_runs",
    "test_exhausted_retries_end_dead_and_retry_job_revives",
    "test_expired_lease_requeues_and_fences_the_late_result",
    "test_heartbeat_extends_the_lease",
    "test_idempotency_key_returns_the_first_job",
    "test_max_pending_is_queue_full_with_a_retry_delay",
    "test_max_pending_refuses_the_whole_batch",
    "test_ordering_key_runs_one_at_a_time_in_submit_order",
    "test_permanent_error_under_a_policy_is_dead_at_once",
    "test_purge_forgets_finished_jobs",
    "test_queue_settings_change_live",
    "test_rate_limits_dispatches",
    "test_reprioritize_moves_a_pending_job_to_the_front",
    "test_results_errors_and_hooks",
    "test_retry_succeeds_on_the_third_attempt",
    "test_slot_shares_width_and_times_out",
    "test_submit_batch_is_all_or_nothing",
    "test_submit_get_and_list_in_dispatch_order",
    "test_ttl_expires_a_job_that_could_not_run",
    "test_update_queue_fields_are_rooted_in_the_queue",
    "test_wait_returns_the_job_as_it_is_when_the_timeout_passes",
    "test_width_caps_underway_jobs_across_workers",
    "test_width_zero_dispatches_nothing",
]
