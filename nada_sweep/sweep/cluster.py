"""Ray for one run: a private local instance, or a running cluster joined by address; what the cluster can do.

`--address` takes `auto` (the cluster this machine belongs to), `host:port` (the head's address, as `ray start
--head` prints it) or `ray://host:port` (Ray Client). Clusters started with `ray start --head` use Ray's token
authentication (Ray turns it on by default); a driver joining one by address needs RAY_AUTH_MODE=token and the
head's token, and without them Ray only says it cannot connect. That failure is recognised here and explained.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections.abc import Callable, Iterator

from nada_sweep.errors import UserError, field_name, quoted
from nada_sweep.sweep.plan import ResolvedSweep

ADDRESS_FORMS = "auto, host:port (the head's address, as `ray start --head` prints it) or ray://host:port"
RAY_CLIENT = "ray://"


def check_address(address: str) -> str:
    """`address` when it is one of the forms `run --address` takes, else a UserError listing them."""
    if address == "auto" or _host_port(address.removeprefix(RAY_CLIENT)):
        return address
    raise UserError(f"--address: {quoted(address)} is not a Ray cluster address; give {ADDRESS_FORMS}")


def _host_port(text: str) -> bool:
    host, colon, port = text.rpartition(":")
    return bool(colon and host and port.isdigit())


@contextlib.contextmanager
def ray_for_run(address: str | None, verbose: bool) -> Iterator[Callable[[], None]]:
    """Ray for this run: the one a caller (a notebook, the tests) is connected to, else one started here.

    Yields `release`: once the trials are over it starts stopping a Ray started here in the background (about
    1.5 s, spent while the report is built); leaving the block waits for that stop.
    """
    import ray

    owns_ray = not ray.is_initialized()
    if owns_ray:
        start_ray(address, verbose)
    stopping: threading.Thread | None = None
    collecting = gc.isenabled()

    def release() -> None:
        nonlocal stopping
        if owns_ray and stopping is None:
            # A Ray handle freed while Ray stops calls into a stopped core worker, which ends the whole process
            # (seen in a demo run: exit 1, no summary, no report). Free the unreachable ones now, and
            # collect no cycles while the stop runs beside the report.
            gc.collect()
            gc.disable()
            stopping = threading.Thread(target=ray.shutdown, name="ray-shutdown")
            stopping.start()

    try:
        yield release
    finally:
        release()
        if stopping is not None:
            stopping.join()
            if collecting:
                gc.enable()


def start_ray(address: str | None, verbose: bool) -> None:
    import ray

    level = logging.INFO if verbose else logging.ERROR
    try:
        if address is None:
            # "local": a private instance even when RAY_ADDRESS or a `ray start` cluster exists on this machine.
            ray.init(address="local", include_dashboard=False, log_to_driver=verbose, logging_level=level)
        else:
            ray.init(address=check_address(address), log_to_driver=verbose, logging_level=level)
    except ConnectionError as error:
        if _refused_authentication(error):
            raise UserError(_authentication_advice(address)) from None
        raise UserError(f"--address {address}: cannot connect to a Ray cluster ({error}); start one with "
                        "`ray start --head` or omit --address to run locally") from None


def _refused_authentication(error: BaseException) -> bool:
    """Whether Ray's "cannot connect" came from the cluster refusing this process's (missing) token."""
    from ray.exceptions import AuthenticationError

    seen: BaseException | None = error
    while seen is not None:
        # Ray wraps the AuthenticationError into the text of a RuntimeError, inside the ConnectionError.
        if isinstance(seen, AuthenticationError) or "AuthenticationError" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _authentication_advice(address: str | None) -> str:
    where = f"--address {address}: the Ray cluster there uses token authentication"
    join = ("Worker nodes need the same two variables for their `ray start --address=...`; `--address auto` on "
            "the head node finds the token by itself.")
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (f"{where}, and this command is not set up for it: set RAY_AUTH_MODE=token, and on any machine "
                "but the head node also RAY_AUTH_TOKEN to the head's token (`ray get-auth-token` on the head node "
                f"prints it; the head keeps it in ~/.ray/auth_token). {join}")
    return (f"{where} and refused this command's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token "
            "is missing or not the head's): set RAY_AUTH_TOKEN to what `ray get-auth-token` prints on the head "
            f"node. {join}")


def cluster_resources() -> tuple[float, float]:
    """The CPUs and GPUs of the Ray cluster this process is connected to."""
    import ray

    available = ray.cluster_resources()
    return available.get("CPU", 0.0), available.get("GPU", 0.0)


def check_cluster(sweep: ResolvedSweep) -> None:
    """Refuse requests the cluster can never satisfy (Tune would wait for them forever)."""
    import ray

    available = ray.cluster_resources()
    resources = sweep.config.resources
    prefix = sweep.resources_loc
    gpus, cpus = (*prefix, "gpus"), (*prefix, "cpus")
    if resources.gpus > 0 and available.get("GPU", 0) < resources.gpus:
        demo = "" if sweep.demo else " (or try --demo)"
        raise UserError(f"{sweep.where(gpus)}: {field_name(gpus)}: each pack asks for {resources.gpus:g} GPU but "
                        f"the Ray cluster has {available.get('GPU', 0):g}; set it to 0 to train on CPUs{demo}")
    if available.get("CPU", 0) < resources.cpus:
        raise UserError(f"{sweep.where(cpus)}: {field_name(cpus)}: each pack asks for {resources.cpus:g} CPUs but "
                        f"the Ray cluster has {available.get('CPU', 0):g}; lower {field_name(cpus)}")
