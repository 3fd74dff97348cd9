"""The parameter bridge: the table of :mod:`superpoint_ros.params` as ROS parameters, checked
before they are declared and before they are applied (rclpy's public API only).

Start-up (:func:`declare_checked`): the node is created with
``automatically_declare_parameters_from_overrides`` (:data:`NODE_OPTIONS`), so every start-up value
(params file, ``-p``, launch) is a declared parameter when the node's code first runs. They are
checked against the table all at once (unknown names, types, ranges, choices, combinations: one
error listing every problem); an integer written for a float (``threshold: 2``) is accepted as
:func:`~superpoint_ros.params.load_params` accepts it. Then each of the table's parameters is
declared again with its descriptor (type, range, read-only, description) and its checked value.
``qos_overrides.<output topic>.publisher.<policy>`` are left to rclpy, which declares them when
the publishers are created (:mod:`superpoint_ros.ros.publishers`); any other ``qos_overrides.*``
(e.g. for the image subscriptions, whose QoS ``qos.reliability`` / ``qos.depth`` set) is a
start-up error.

Run time, as ros2/demos' parameter nodes do: validate in an ``on_set_parameters`` callback
(:func:`check_changes`: nothing changes when a value is invalid), apply in a post-set callback.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult

from ..params import PARAMETERS, ParamsError, check_value, checked_values, coerce, cross_check, defaults, validate

#: Node keyword arguments the bridge relies on (start-up values visible as declared parameters)
NODE_OPTIONS = {"automatically_declare_parameters_from_overrides": True}
#: parameters rclpy itself declares (time source, type description service)
RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")
QOS_OVERRIDES_PREFIX = "qos_overrides."
_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def descriptor_for(name: str) -> ParameterDescriptor:
    """The ParameterDescriptor of a parameter of the table: type, description, range, read-only."""
    param = PARAMETERS[name]
    descriptor = ParameterDescriptor(name=name, type=_ROS_TYPES[param.kind], description=param.description,
                                     read_only=param.read_only)
    if param.limits is not None and param.kind is int:
        descriptor.integer_range = [IntegerRange(from_value=int(param.limits[0]), to_value=int(param.limits[1]), step=1)]
    elif param.limits is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(param.limits[0]),
                                                              to_value=float(param.limits[1]), step=0.0)]
    if param.choices is not None:
        descriptor.additional_constraints = "one of: " + ", ".join(param.choices)
    return descriptor


def qos_override_names(topics: Iterable[str], policies: Iterable[str]) -> List[str]:
    """The ``qos_overrides`` parameter names rclpy declares for publishers on the resolved
    ``topics`` with ``policies`` (``reliability``, ...)."""
    return [f"{QOS_OVERRIDES_PREFIX}{topic}.publisher.{policy}" for topic in topics for policy in policies]


def check_start_up(given: Mapping[str, Any], allowed_qos: Iterable[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Start-up values ``given`` (name -> value, every parameter the node has) -> (the table's
    parameters among them, coerced; every problem). ``allowed_qos``: the ``qos_overrides``
    names that configure something (:func:`qos_override_names` of the node's outputs)."""
    allowed_qos = set(allowed_qos)
    values, problems = checked_values({name: value for name, value in given.items() if name in PARAMETERS})
    for name in given:
        if name in PARAMETERS:
            continue
        if name.startswith(QOS_OVERRIDES_PREFIX):
            if name not in allowed_qos:
                problems.append(f"{name} configures nothing: QoS overrides apply to the output publishers only "
                                f"(qos_overrides.<topic>.publisher.<history|depth|reliability> for the topics this node "
                                f"publishes); the image subscriptions follow qos.reliability and qos.depth")
        elif name not in RCLPY_PARAMETERS:
            problems.append(f"unknown parameter {name!r}")
    if not problems:
        problems = cross_check({**defaults(), **values})
    return values, problems


def declare_checked(node, output_topics: Iterable[str], policies: Iterable[str]) -> None:
    """Check the start-up values of ``node`` (created with :data:`NODE_OPTIONS`) and declare the
    table's parameters with their descriptors. ``output_topics``: the relative names the node
    publishes (their QoS overrides are allowed). Raises :class:`ParamsError` listing every problem."""
    given = {name: p.value for name, p in node.get_parameters_by_prefix("").items()}
    topics = [node.resolve_topic_name(t) for t in output_topics]
    values, problems = check_start_up(given, qos_override_names(topics, policies))
    if problems:
        raise ParamsError("invalid parameters: " + "; ".join(problems) + " (see docs/node.md)")
    for name in given:
        if name in PARAMETERS or name.startswith(QOS_OVERRIDES_PREFIX):
            node.undeclare_parameter(name)  # declared from the overrides, untyped: declared properly next
    for name, param in PARAMETERS.items():
        node.declare_parameter(name, values.get(name, param.default), descriptor_for(name), ignore_override=True)


def start_up_value(node, name: str) -> Any:
    """A parameter's start-up value before :func:`declare_checked` ran (the table's default when
    none was given), e.g. ``stereo.enabled`` to know the outputs."""
    if node.has_parameter(name):
        value = coerce(name, node.get_parameter(name).value)
        if check_value(name, value) is None:
            return value
    return PARAMETERS[name].default


def read_values(node) -> Dict[str, Any]:
    """The declared parameters' current values, validated together (raises ParamsError)."""
    return validate({name: node.get_parameter(name).value for name in PARAMETERS})


def table_changes(parameters) -> Tuple[Dict[str, Any], Optional[str]]:
    """rclpy Parameters being set -> (the table's ones, coerced; the first reason one is
    invalid, else ``None``). Others (``use_sim_time``) are not ours and left out."""
    changes, problems = checked_values({p.name: p.value for p in parameters if p.name in PARAMETERS})
    return (changes, None) if not problems else ({}, problems[0])


def check_changes(parameters, current: Optional[Mapping[str, Any]]) -> SetParametersResult:
    """The on-set (validate) step: every value valid on its own and, with ``current`` (the
    validated values in use; ``None`` for a lifecycle node not configured yet, which checks
    the whole set at configure), valid together."""
    changes, reason = table_changes(parameters)
    if reason:
        return SetParametersResult(successful=False, reason=reason)
    if current is not None:
        try:
            validate({**current, **changes})
        except ParamsError as e:
            return SetParametersResult(successful=False, reason=str(e))
    return SetParametersResult(successful=True)
