namespace Spdf.Tensors.Autograd;

/// <summary>
/// Records an operation defined outside the engine on the autograd tape (the role of <c>torch.autograd.Function</c>).
/// Libraries built on Spdf.Tensors (sparse kernels, fused layers) compute the forward themselves and hand over a
/// backward closure; the engine calls it with the output's gradient during <see cref="Tensor.Backward"/>.
/// </summary>
public static class CustomOp
{
    /// <summary>
    /// Storage for a custom op's output, a gradient it returns, or an array its backward closure saves: it comes from
    /// the engine's pool (memory already faulted in) and, inside a <see cref="TensorScope"/>, goes back to it when the
    /// scope ends. Do not keep the array beyond the step.
    /// </summary>
    /// <param name="length">Elements.</param>
    /// <param name="clear">Zero the array (otherwise its contents are arbitrary; write every element).</param>
    public static float[] RentStorage(int length, bool clear)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return GradientPool.Rent(length, clear);
    }

    /// <summary>
    /// Gives back, before its scope ends, an array from <see cref="RentStorage"/> that nothing references any more (e.g.
    /// a temporary input of an op run without gradients), so that the next rent of that length reuses it.
    /// </summary>
    public static void ReturnStorage(float[] array)
    {
        ArgumentNullException.ThrowIfNull(array);
        GradientPool.Return(array);
    }

    /// <summary>
    /// Attaches <paramref name="backward"/> to <paramref name="result"/> when gradient recording is on and an input
    /// requires grad. The closure receives the gradient of <paramref name="result"/> and returns one gradient per
    /// input (same shape as that input), or null where an input needs none. It must not modify its argument, and each
    /// gradient it returns must either be newly allocated or share storage with its argument (never with a tensor kept
    /// elsewhere), and the closure must not keep a reference to its argument after returning: the engine accumulates into
    /// fresh gradients in place and recycles consumed ones.
    /// </summary>
    /// <returns><paramref name="result"/>, now a non-leaf tensor when recorded.</returns>
    /// <exception cref="ArgumentException"><paramref name="result"/> already belongs to a recorded op.</exception>
    public static Tensor Record(Tensor result, string name, Tensor[] inputs, Func<Tensor, Tensor?[]> backward)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(backward);
        if (!result.IsLeaf || result.RequiresGrad)
            throw new ArgumentException($"CustomOp '{name}': the result must be a fresh tensor, not one that already requires grad.", nameof(result));
        return AutogradEngine.Record(result, name, inputs, backward);
    }
}
