"""``superpoint_lifecycle_node``: the SuperPoint front-end as a managed (lifecycle) ROS 2 node.

The same node as ``superpoint_node`` (same name, topics, parameters and messages; see
:mod:`superpoint_ros.ros.node`), but its start-up runs at the lifecycle transitions that a launch
system or a Nav2-style lifecycle manager requests through ``<node>/change_state``:

  unconfigured  the parameters are declared (a parameter file with invalid values still stops the
                process at once, as superpoint_node does); nothing else exists
  configure     reads and validates the parameters, loads the weights, runs the network once
                (warm-up), creates the publishers (lifecycle publishers, disabled). A bad weight
                file, a missing CUDA or an invalid combination of parameters: one error line and
                the transition FAILS, the node stays unconfigured
  activate      fresh counters and tracks, starts the worker thread, the image (and camera_info) subscriptions and
                the /diagnostics timer; the publishers publish
  deactivate    destroys the image subscriptions (and the stereo pairing state) and the timer,
                lets the worker finish its current frame, drops the queued frames, disables the
                publishers
  cleanup       destroys the publishers and frees the network (empties torch's CUDA cache on CUDA)
  shutdown      from any state: whatever exists is released as above

Parameters that are not read-only can be set in any state; an unconfigured node accepts each value
that is valid on its own and checks the whole set at configure. Read-only ones (weights, device,
...) are fixed for the life of the process, as for superpoint_node.
"""
from __future__ import annotations

import functools
import gc
import sys
from typing import List, Optional

import numpy as np
import torch
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from ..params import ParamsError
from ..weights import WeightsError
from . import node as plain_node
from . import parameters
from .node import NODE_NAME, SuperPointNode

EXECUTABLE = "superpoint_lifecycle_node"
#: the warm-up image: VGA, a common camera size (on CUDA, cuDNN autotuning and CUDA-graph capture
#: are per input size, so a camera of another size pays those on its first frame)
WARMUP_SHAPE = (480, 640)
WARMUP_CHECKER_PX = 16  # squares of a checkerboard: corners, so keypoint decoding runs too
#: faults of the configuration, reported as a failed configure transition (not a crash)
CONFIGURE_FAULTS = (WeightsError, ParamsError, ParameterException, RuntimeError, ValueError)


def warmup_image(shape=WARMUP_SHAPE, square: int = WARMUP_CHECKER_PX) -> np.ndarray:
    """A ``shape`` (rows, cols) uint8 checkerboard of ``square``-pixel squares, values 0/255."""
    rows, cols = np.indices(shape)
    return (((rows // square + cols // square) % 2) * 255).astype(np.uint8)


def _logged_transition(callback):
    """An exception in a transition is logged as one error line and reported as ERROR (rclpy
    would turn it into ERROR without saying why); on_error then releases everything."""
    @functools.wraps(callback)
    def transition(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return callback(self, state)
        except Exception as e:  # noqa: BLE001 - a transition must answer, not kill the executor
            self.get_logger().error(f"{callback.__name__} failed ({type(e).__name__}): {e}")
            return TransitionCallbackReturn.ERROR
    return transition


class SuperPointLifecycleNode(LifecycleNodeMixin, SuperPointNode):
    """The front-end as a managed node: :class:`SuperPointNode`'s start-up steps
    (``_read_parameters``, ``_create_frontend``, ``_create_publishers``, ...) run at the
    transitions instead of in the constructor. Construction raises ParamsError/ParameterException
    for invalid start-up parameter values (nothing can be declared then)."""

    def __init__(self, **node_kwargs):
        # Node's and the mixin's constructors, as rclpy's LifecycleNode calls them;
        # SuperPointNode.__init__ is the all-at-once start-up, which the transitions replace
        Node.__init__(self, NODE_NAME, **{**node_kwargs, **parameters.NODE_OPTIONS})
        self.frontend = None  # None until configured (on_set_parameters relies on it)
        self.params = None
        self._lifecycle_publishers: list = []
        self._declare_parameters()
        self._watch_parameters()
        LifecycleNodeMixin.__init__(self)

    def _new_publisher(self, msg_type, topic: str, qos, **kwargs):
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos, **kwargs)
        self._lifecycle_publishers.append(publisher)
        return publisher

    # --- transitions -------------------------------------------------------------------------------
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = self._read_parameters()
            self._create_frontend()
            self._warm_up()
        except CONFIGURE_FAULTS as e:
            self._free_frontend()
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self._create_publishers()
        self._log_ready()
        return super().on_configure(state)

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker_alive():
            self.get_logger().error("activate failed: the worker thread is still busy with a frame from before "
                                    "the last deactivate; try again")
            return TransitionCallbackReturn.FAILURE
        self._init_pipeline_state()
        with self._frontend_lock:
            self.frontend.reset()  # a new stream: no matches against a frame from before the pause
        result = super().on_activate(state)  # enables the publishers
        self._start_worker()
        self._create_subscriptions()
        self._create_diagnostics_timer()
        self.get_logger().info(f"active: processing images from {'; '.join(i.describe() for i in self.inputs)}")
        return result

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.get_logger().info("inactive: images are ignored")
        return super().on_deactivate(state)  # disables the publishers

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)
        self._release_configuration()
        self.get_logger().info("unconfigured: network and publishers released")
        return result

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release_configuration()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After a transition raised: release everything, so the node is a clean unconfigured one."""
        self._stop_processing()
        self._release_configuration()
        self.get_logger().error(f"released everything after an error in a transition from {state.label!r}: "
                                f"the node is unconfigured")
        return TransitionCallbackReturn.SUCCESS

    # --- the pieces of the transitions (each safe to call when there is nothing to undo) -------------
    def _warm_up(self) -> None:
        """One forward pass (and keypoint decoding) on a synthetic image, stereo as a pair: the
        one-time costs are paid at configure, not on the first camera frame. They are CUDA's
        (context and kernel loading; cuDNN autotuning and the CUDA-graph capture, both per input
        size); on the CPU with ONNX Runtime the first frame was no slower than the next ones."""
        image = warmup_image()
        self.frontend.extractor.extract_batch([image, image] if self.stereo else [image])

    def _worker_alive(self) -> bool:
        worker = getattr(self, "_worker", None)
        return worker is not None and worker.is_alive()

    def _stop_processing(self) -> None:
        """No more input callbacks, no timer, no worker, no queued frames."""
        self._destroy_subscriptions()
        timer = self.__dict__.pop("diagnostics_timer", None)
        if timer is not None:
            self.destroy_timer(timer)
        self._stop_worker()
        if self._worker_alive():
            self.get_logger().warning("the worker thread is still busy with a frame after 5 s; it stops after it")
        queue = getattr(self, "_queue", None)
        if queue is not None:
            queue.clear()

    def _release_configuration(self) -> None:
        """Destroys the publishers and frees the network."""
        for publisher in self._lifecycle_publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._lifecycle_publishers = []
        self._free_frontend()

    def _free_frontend(self) -> None:
        """Drops the front-end (the only reference to the network); on CUDA the freed blocks go
        back to the driver, so other processes can use the memory."""
        frontend, self.frontend = self.frontend, None
        if frontend is None:
            return
        on_cuda = frontend.extractor.device.type == "cuda"
        del frontend
        stats = getattr(self, "stats", None)
        if stats is not None:
            stats.forget_last()  # the last FrameResult
        gc.collect()  # reference cycles in torch modules would otherwise keep the weights until later
        if on_cuda:
            torch.cuda.empty_cache()

    def destroy_node(self) -> None:
        """Ctrl-C or the end of the process, in any state: releases as shutdown does."""
        super().destroy_node()  # SuperPointNode's: stops the worker first
        # rclpy's destroy_node leaves the lifecycle services (owned by the state machine) on the
        # graph until garbage collection: a manager would still see, and call, a dead node
        self._state_machine.destroy_when_not_in_use()
        self._free_frontend()


USAGE = f"""usage: {EXECUTABLE} [--help] --ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r FROM:=TO ...]

  {EXECUTABLE} --ros-args --params-file config/superpoint_mono.yaml -r image:=/camera/image_raw
  ros2 lifecycle set /{NODE_NAME} configure && ros2 lifecycle set /{NODE_NAME} activate

The node starts unconfigured; a lifecycle manager (or ros2 lifecycle set) drives it (docs/node.md).
"""


def main(args: Optional[List[str]] = None) -> int:
    """``ros2 run superpoint_ros superpoint_lifecycle_node --ros-args --params-file ...``"""
    argv = sys.argv[1:] if args is None else list(args[1:])
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in own or "--help" in own:
        print(USAGE + "\n" + __doc__.strip())
        return 0
    return plain_node.main(args, node_class=SuperPointLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())
