namespace Spdf.Sparsity;

/// <summary>How a sparse layer computes.</summary>
public enum SparseKernelMode
{
    /// <summary>Measure both kernels at first use (and again after a mask change that alters the density) and keep the
    /// faster (<see cref="Kernels.KernelChoice.Faster"/>). Where the two are close the timing may pick either from run to
    /// run; <see cref="Heuristic"/> chooses without timing.</summary>
    Auto,
    /// <summary>The reference: a dense GEMM over the masked weight; gains no time.</summary>
    MaskedDense,
    /// <summary>CSR kernels that do work only for kept weights (SpMM, SDDMM, SpMV).</summary>
    Compressed,
    /// <summary>
    /// Choose at first use (and again after a mask change that alters the density) by a fixed rule instead of a timing:
    /// the compressed kernels where the density is at most <see cref="Kernels.KernelChoice.CrossoverDensity"/> for the
    /// layer's shape, its tokens per pass and whether it trains. The choice depends only on those, so runs with the
    /// same seed repeat bit for bit even where masks change during training (magnitude pruning, SET, RigL), where
    /// <see cref="Auto"/>'s timings may pick either kernel at a near tie, and the two kernels round differently.
    /// </summary>
    Heuristic,
}

/// <summary>Where a sparse layer keeps its weight.</summary>
public enum SparseWeightStorage
{
    /// <summary>
    /// A dense <c>[out, in]</c> parameter <c>weight</c>, exactly 0 where the mask drops it, with its dense gradient. The
    /// mask may change (magnitude pruning, SET, RigL); optimizers keep moments only for kept weights.
    /// </summary>
    Dense,
    /// <summary>
    /// Only the kept weights: the parameter <c>weight_values</c> <c>[kept]</c> (in the CSR entry order of the mask) is the
    /// master copy the kernels read directly, and its gradient and optimizer moments are <c>[kept]</c> too, so the layer's
    /// training memory falls with density. The mask is fixed; Densify turns the layer back into a dense one.
    /// </summary>
    Compressed,
}

/// <summary>The phase of an SPDF run, recorded in checkpoints.</summary>
public enum SparsityPhase
{
    /// <summary>Sparse pre-training: masks are applied.</summary>
    SparsePretrain,
    /// <summary>Dense fine-tuning after Densify.</summary>
    DenseFinetune,
    /// <summary>Sparse fine-tuning: the mask is kept and frozen.</summary>
    SparseFinetune,
}

/// <summary>What happens to optimizer state when a model is densified.</summary>
public enum OptimizerStateOnDensify
{
    /// <summary>Moments are kept; those of the newly trainable weights are 0 already (they never had a gradient).</summary>
    Keep,
    /// <summary>Moments (and the step count of bias correction) of the densified layers restart from zero.</summary>
    Reset,
}
