// A user's program that references Spdf.Sparsity.TorchSharp by package only (run by .ci/package-check): it sparsifies
// a TorchSharp model, trains it through the SparsityController, checks the invariants, densifies, and exits non-zero
// on any failure.
using Spdf.Sparsity;
using Spdf.Sparsity.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

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
