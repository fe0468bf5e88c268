"""The order of an exported model's outputs: the contract's (``contract.OUTPUTS``), in every artefact.

Output 0 is ``probs`` (N, K) and, for a calibrated model, output 1 ``ood_score`` (N,). Deployments read outputs by
position (``session.run(None, feed)[0]``), while tf2onnx flattens Keras's dict of outputs in sorted key order, which
puts ood_score first; the export therefore reorders every graph it writes, and its checks refuse any other order.
"""
from __future__ import annotations

import onnx

from s3f_edge.contract import OUTPUTS


def in_contract_order(items: list, name=lambda item: item) -> list:
    """``items`` (outputs, or their names) in ``contract.OUTPUTS`` order: probs, then ood_score; names outside
    the contract keep their place after those."""
    return sorted(items, key=lambda item: OUTPUTS.index(name(item)) if name(item) in OUTPUTS else len(OUTPUTS))


def order_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Put the graph's outputs in the contract's order, in place: output 0 ``probs`` (N, K), output 1 ``ood_score``
    (N,). tf2onnx flattens Keras's dict of outputs in sorted key order, which puts ood_score first, and deployments
    read outputs by position.

    Args:
        model: an exported ONNX model (one output, or probs and ood_score in any order).

    Returns:
        ``model``, its ``graph.output`` reordered (the nodes and the function computed are unchanged).
    """
    outputs = model.graph.output
    ordered = in_contract_order(list(outputs), lambda output: output.name)
    if [o.name for o in ordered] != [o.name for o in outputs]:
        copies = [onnx.ValueInfoProto() for _ in ordered]
        for copy, output in zip(copies, ordered):
            copy.CopyFrom(output)  # copied first: clearing the repeated field would release the originals
        del outputs[:]
        outputs.extend(copies)
    return model


def output_order_problems(model: onnx.ModelProto) -> list[str]:
    """A calibrated model's outputs out of the contract's order (output 0 probs, output 1 ood_score)."""
    names = [output.name for output in model.graph.output]
    if sorted(names) == sorted(OUTPUTS) and names != list(OUTPUTS):
        return [f"outputs {names}: output 0 must be {OUTPUTS[0]} and output 1 {OUTPUTS[1]} (contract.OUTPUTS)"]
    return []
