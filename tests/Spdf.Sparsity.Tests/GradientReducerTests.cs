using System.Collections.Concurrent;
using Spdf.Sparsity.Distributed;
using Spdf.Tests.Shared;

namespace Spdf.Sparsity.Tests;

/// <summary>
/// The engine-free gradient averaging over an in-process group of threads (each a rank, with MPI's collective
/// semantics): bucketed averaging equals the plain mean at every bucket size, masked gradients travel at kept places
/// only and leave dropped places alone, byte counts, and the replica check. Real MPI: tests/Spdf.Mpi.Tests.
/// </summary>
public class GradientReducerTests
{
    private static float[] Values(int rank, int entry, int n) =>
        Enumerable.Range(0, n).Select(i => (float)Math.Sin(1 + rank * 7.1 + entry * 3.3 + i * 0.37)).ToArray();

    [Theory]
    [InlineData(2, 4096)]
    [InlineData(3, 4096)]
    [InlineData(2, 1 << 20)]
    [InlineData(4, 8192)]
    public void BucketedAveragingIsTheMeanAndMaskedGradientsTravelAtKeptPlacesOnly(int ranks, int bucketBytes)
    {
        int[] lengths = [5, 3000, 17, 1200, 2500, 1]; // some larger than a 4 KiB bucket (1,024 floats), some split across buckets
        var mask = Enumerable.Range(0, 3000).Select(i => i % 4 == 1 ? 1f : 0f).ToArray(); // entry 1 is masked: 75% dropped
        var results = new float[ranks][][];
        long[] bytes = new long[ranks];
        ThreadGroup.OnRanks(ranks, comm =>
        {
            var grads = lengths.Select((n, e) => Values(comm.Rank, e, n)).ToArray();
            for (int i = 0; i < mask.Length; i++) if (mask[i] == 0) grads[1][i] = 100 + comm.Rank; // not sent: must stay as they are
            var entries = grads.Select((g, e) => e == 1 ? ReducedGradient.Masked($"p{e}", g.Length, () => g, mask) : ReducedGradient.Dense($"p{e}", g.Length, () => g)).ToList();
            var reducer = new GradientReducer(comm, entries, bucketBytes);
            reducer.AverageGradients();
            results[comm.Rank] = grads;
            bytes[comm.Rank] = reducer.BytesPerStep;
            reducer.SparseLayerBytesPerStep.Should().Be(750 * 4);
            reducer.SparseLayerDenseBytesPerStep.Should().Be(3000 * 4);
        });
        for (int e = 0; e < lengths.Length; e++)
            for (int i = 0; i < lengths[e]; i++)
            {
                if (e == 1 && mask[i] == 0)
                {
                    for (int r = 0; r < ranks; r++) results[r][e][i].Should().Be(100 + r);
                    continue;
                }
                double mean = Enumerable.Range(0, ranks).Average(r => (double)Values(r, e, lengths[e])[i]);
                for (int r = 0; r < ranks; r++) results[r][e][i].Should().BeApproximately((float)mean, 1e-6f, $"entry {e}[{i}] on rank {r}");
            }
        bytes.Should().OnlyContain(b => b == (5 + 750 + 17 + 1200 + 2500 + 1) * 4L);
    }

    [Fact]
    public void BucketsBatchSmallGradientsIntoFewCollectives()
    {
        var counts = new int[2];
        ThreadGroup.OnRanks(2, comm =>
        {
            var grads = Enumerable.Range(0, 100).Select(e => Values(comm.Rank, e, 10)).ToArray(); // 1,000 floats in all
            var reducer = new GradientReducer(comm, grads.Select((g, e) => ReducedGradient.Dense($"p{e}", 10, () => g)).ToList(), 4096);
            reducer.AverageGradients();
            counts[comm.Rank] = reducer.CollectivesLastStep;
        });
        counts.Should().Equal(1, 1); // 100 tensors, one 4 KiB bucket
    }

    [Fact]
    public void OneRankChangesNothingAndSendsNothing()
    {
        var g = Values(0, 0, 10);
        var copy = g.ToArray();
        var reducer = new GradientReducer(SingleProcess.Instance, [ReducedGradient.Dense("w", 10, () => g)]);
        reducer.AverageGradients();
        g.Should().Equal(copy);
        reducer.BytesPerStep.Should().Be(0);
        reducer.CollectivesLastStep.Should().Be(0);
    }

    [Fact]
    public void BadInputIsNamed()
    {
        var act = () => ReducedGradient.Masked("h.0.mlp.c_fc.weight", 12, () => new float[12], new float[10]);
        act.Should().Throw<ArgumentException>().WithMessage("*h.0.mlp.c_fc.weight*10*expected 12*");
        var g = new float[8];
        var wrong = new GradientReducer(SingleProcess.Instance, [ReducedGradient.Dense("w", 8, () => g)]);
        ((Action)(() => new GradientReducer(SingleProcess.Instance, [], 100))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*4096*");
        ThreadGroup.OnRanks(2, comm =>
        {
            var shortGrad = new float[4];
            var r = new GradientReducer(comm, [ReducedGradient.Dense("w", 8, () => shortGrad)]);
            r.Invoking(x => x.AverageGradients()).Should().Throw<InvalidOperationException>().WithMessage("*'w' has 4 elements; expected 8*");
        });
        _ = wrong;
    }

    [Fact]
    public void ReplicaCheckNamesTheTensorAndRankThatDiffer()
    {
        var messages = new ConcurrentBag<string>();
        ThreadGroup.OnRanks(3, comm =>
        {
            var a = new float[] { 1, 2, 3 };
            var b = new float[] { 4, 5, comm.Rank == 2 ? 7 : 6 };
            try { ReplicaCheck.Verify(comm, ["a", "b"], [ReplicaCheck.Hash(a), ReplicaCheck.Hash(b)], "tensor"); }
            catch (InvalidOperationException e) { messages.Add(e.Message); }
        });
        messages.Should().HaveCount(3, "every rank throws together, none waits");
        messages.Should().OnlyContain(m => m.Contains("'b' on rank 2"));
        ThreadGroup.OnRanks(2, comm => ReplicaCheck.Verify(comm, ["a"], [ReplicaCheck.Hash([1f, 2f])], "tensor")); // equal: no throw
        ReplicaCheck.Hash([1f, 2f]).Should().NotBe(ReplicaCheck.Hash([2f, 1f]));
        ReplicaCheck.Hash([0f]).Should().NotBe(ReplicaCheck.Hash([-0f]), "bits, not values, are compared");
    }

    [Fact]
    public void TheControllerAveragesRigLsDenseGradientsAcrossRanks()
    {
        var dense = new float[2][];
        ThreadGroup.OnRanks(2, comm =>
        {
            var w = new ArrayWeight("l0", new float[30], new Masks.SparsityMask(Enumerable.Range(0, 30).Select(i => (float)(i % 2)).ToArray(), 6, 5));
            var model = new ArrayModel([w]) { Algorithm = new Algorithms.RigL(0.5, every: 1, endStep: 10) };
            var controller = new SparsityController(model) { Communicator = comm };
            controller.BeginStep(1);
            w.Gradient = Enumerable.Range(0, 30).Select(i => (float)(comm.Rank * 30 + i)).ToArray();
            controller.BeforeOptimizerStep(1);
            dense[comm.Rank] = w.DenseGradient.ToArray();
        });
        dense[0].Should().Equal(Enumerable.Range(0, 30).Select(i => i + 15f));
        dense[1].Should().Equal(dense[0]);
    }
}
