// A user's program that references Spdf's packages only (run by .ci/package-check). With Spdf.Gpt (and through it
// Spdf.Sparsity, Spdf.Tensors and the core) it sparse-pre-trains a tiny GPT, densifies and fine-tunes it; with
// Spdf.Sparsity.TorchSharp it sparsifies a TorchSharp model, trains it through the SparsityController, checks the
// invariants and densifies; with Spdf.Mpi it trains the GPT in an MPI world (of one rank: run without mpiexec) through
// MPICH. It exits non-zero on any failure.
using Spdf.Gpt;
using Spdf.Gpt.Data;
using Spdf.Gpt.Training;
using Spdf.Sparsity;
using Spdf.Sparsity.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

// Spdf.Gpt on Spdf.Tensors
var tokens = TokenStream.FromArray(Enumerable.Range(0, 20_000).Select(i => i * 7 % 512).ToArray(), 512);
var gpt = new GptModel(GptConfig.Tiny);
var handle = Sparsifier.Apply(gpt, SparsityConfig.Default(0.75));
var trainer = new Trainer(gpt, new TrainerOptions(), handle);
trainer.Run(new TrainingStage { Name = "pretrain", Data = new WindowSampler(tokens, 4, 32, seed: 1), Steps = 20 });
if (Math.Abs(handle.Report().LayerSparsity - 0.75) > 1e-3) throw new InvalidOperationException($"GPT sparsity {handle.Report().LayerSparsity}");
trainer.Densify();
var ft = trainer.Run(new TrainingStage { Name = "finetune", Data = new WindowSampler(tokens, 4, 32, seed: 2), Steps = 10 });
if (!double.IsFinite(ft.TrainLoss[^1].Loss)) throw new InvalidOperationException("the GPT's fine-tuning loss is not finite");
Console.WriteLine($"package consumer: Spdf.Gpt pre-trained 75% sparse, densified, fine-tuned (last loss {ft.TrainLoss[^1].Loss:F3})");

// Spdf.Sparsity.TorchSharp

var net = nn.Sequential(("0", nn.Linear(64, 256)), ("1", nn.GELU()), ("2", nn.Linear(256, 10)));
var opt = optim.AdamW(net.parameters(), lr: 1e-3);
var sparse = TorchSparsifier.Apply(net, new SparsityConfig([new SparsityGroup("0.weight", 0.75)]), opt);
var c = new SparsityController(sparse);
for (long step = 1; step <= 20; step++)
{
    c.BeginStep(step);
    opt.zero_grad();
    var loss = nn.functional.mse_loss(net.call(randn(32, 64)), randn(32, 10));
    loss.backward();
    c.BeforeOptimizerStep(step); opt.step(); c.AfterOptimizerStep(step);
}
Console.WriteLine(sparse.Report());
var w = sparse.Layers[0].Weight.detach().flatten().data<float>().ToArray();
var m = sparse.Layers[0].MaskTensor.flatten().data<float>().ToArray();
if (w.Where((v, i) => m[i] == 0 && v != 0).Any()) throw new InvalidOperationException("a dropped weight moved");
if (Math.Abs(sparse.Report().LayerSparsity - 0.75) > 1e-9) throw new InvalidOperationException($"sparsity {sparse.Report().LayerSparsity}");
sparse.Densify();
Console.WriteLine($"package consumer: trained 75% sparse, phase {sparse.Phase}");

// Spdf.Mpi (MPI.NET on MPICH; a world of one rank without mpiexec)
return Spdf.Mpi.MpiCommunicator.Run(args, world =>
{
    var model = new GptModel(GptConfig.Tiny);
    var t = new Trainer(model, new TrainerOptions { Communicator = world }, Sparsifier.Apply(model, SparsityConfig.Default(0.75)));
    var r = t.Run(new TrainingStage { Name = "ddp", Data = WindowSampler.ForRank(tokens, 4, 32, 1, world.Rank, world.Size), Steps = 3 });
    Console.WriteLine($"package consumer: trained in an MPI world of {world.Size} on {Spdf.Mpi.MpiCommunicator.ProcessorName} (last loss {r.TrainLoss[^1].Loss:F3})");
    return 0;
});
