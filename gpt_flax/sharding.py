"""The model under a mesh with explicit axes (`jax.sharding.AxisType.Explicit`, JAX's sharding in types).

Under such a mesh every value's sharding is part of its type, and JAX asks the program to say the
output sharding of a gather (the embedding lookup), of a reshape that splits a sharded axis, or of an
iota beside a sharded array. The model does not spell these out op by op: its forward runs with the
mesh's axes made automatic (`jax.sharding.auto_axes`), so the partitioner places the work as under a
plain mesh (the flash kernels still run on each device's share of the batch and heads), and hands its
outputs back typed with their batch axis sharded as the inputs' batch axis, everything else replicated.
"""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec


def explicit_axes() -> tuple[str, ...]:
    """The names of the current mesh's explicit axes: none outside `jax.set_mesh` of such a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    return tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types) if kind == jax.sharding.AxisType.Explicit)


def in_auto_axes(fn, batched, *args):
    """`fn(*args)`; under a mesh with explicit axes, run with them automatic, and each output whose leading
    axis has `batched`'s leading size typed as sharded like `batched`'s leading axis, the rest replicated."""
    axes = explicit_axes()  # only these: inside a shard_map some axes are manual, and stay so
    if not axes:
        return fn(*args)
    spec = tuple(jax.typeof(batched).sharding.spec)
    lead, rows = (spec[0] if spec else None), batched.shape[0]
    # The outputs' shapes, to type each (a second trace, at compile time only).
    shapes = jax.eval_shape(jax.sharding.auto_axes(fn, axes=axes, out_sharding=PartitionSpec()), *args)
    out_specs = jax.tree_util.tree_map(
        lambda s: PartitionSpec(lead) if s.ndim and s.shape[0] == rows else PartitionSpec(), shapes
    )
    return jax.sharding.auto_axes(fn, axes=axes, out_sharding=out_specs)(*args)
