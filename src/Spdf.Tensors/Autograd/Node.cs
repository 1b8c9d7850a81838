namespace Spdf.Tensors.Autograd;

/// <summary>
/// One recorded operation of the define-by-run tape: its inputs and a closure that maps the
/// gradient of its output to the gradients of its inputs (null where an input needs none).
/// </summary>
internal sealed class Node(string name, Tensor[] inputs, Func<Tensor, Tensor?[]> backward)
{
    public string Name { get; } = name;
    public Tensor[] Inputs { get; private set; } = inputs;
    public Func<Tensor, Tensor?[]>? BackwardFn { get; private set; } = backward;

    public void Release()
    {
        BackwardFn = null;
        Inputs = [];
    }
}
