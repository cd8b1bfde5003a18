"""``bprop train --net convnet``: the book's ``ch07/train_convnet.py`` on bprop.

The book trains its SimpleConvNet with ``common/trainer.py``: Adam (lr
0.001), minibatches of 100 drawn with replacement, the loss recomputed after
each update, accuracy on the first 1,000 training and test images once per
epoch, and the test accuracy on the whole test set at the end. :func:`train`
does the same steps in the same order, so a seeded run draws the same
batches.
"""
import sys
import time

import numpy as np

from .convnet import SimpleConvNet
from .optimizer import Adam

__all__ = ["train", "main"]


def train(network, x_train, t_train, x_test, t_test, epochs=20, batch_size=100, optimizer=None,
          evaluate_sample_num_per_epoch=1000, on_epoch=None, on_iter=None):
    """The book's ``Trainer.train`` for ``network`` (updated in place).

    Parameters
    ----------
    network : SimpleConvNet
    x_train, t_train, x_test, t_test : numpy.ndarray
        Images (N, C, H, W) and labels (class indices or one-hot).
    epochs, batch_size : int
        ``int(epochs * max(train_size / batch_size, 1))`` steps in all.
    optimizer : object with ``update(params, grads)``, optional
        Default ``Adam(lr=0.001)``, as the book's ``train_convnet.py``.
    evaluate_sample_num_per_epoch : int or None
        Images of each set used for the per-epoch accuracy (None: all).
    on_epoch, on_iter : callable, optional
        ``on_epoch(record)`` after each evaluation (``epoch, iter, loss,
        train_acc, test_acc``); ``on_iter(i)`` after each step.

    Returns
    -------
    dict
        ``loss`` (per step), ``epochs`` (records), ``test_acc`` on the whole
        test set, ``iters`` and ``step_time`` (seconds in steps, evaluation
        excluded).
    """
    optimizer = optimizer if optimizer is not None else Adam(lr=0.001)
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch_size, 1)
    max_iter = int(epochs * iter_per_epoch)
    n_eval = evaluate_sample_num_per_epoch
    losses, records, step_time = [], [], 0.0
    for i in range(max_iter):
        start = time.perf_counter()
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        grads = network.gradient(x_batch, t_batch)
        optimizer.update(network.params, grads)
        loss = float(network.loss(x_batch, t_batch))
        step_time += time.perf_counter() - start
        losses.append(loss)
        if i % iter_per_epoch == 0:
            xs, ts = (x_train, t_train) if n_eval is None else (x_train[:n_eval], t_train[:n_eval])
            xt, tt = (x_test, t_test) if n_eval is None else (x_test[:n_eval], t_test[:n_eval])
            record = {"epoch": len(records), "iter": i, "loss": loss,
                      "train_acc": float(network.accuracy(xs, ts)), "test_acc": float(network.accuracy(xt, tt))}
            records.append(record)
            if on_epoch is not None:
                on_epoch(record)
        if on_iter is not None:
            on_iter(i)
    return {"loss": losses, "epochs": records, "test_acc": float(network.accuracy(x_test, t_test)),
            "iters": max_iter, "step_time": step_time}


def main(args, load, backend, progress_bar, epoch_printer, report):
    """Run ``bprop train --net convnet`` with the command line's own helpers.

    ``load(data_dir, quiet)`` gives ``(data, source)`` (flattened images,
    one-hot labels), ``backend(name, threads)`` a context that selects the
    kernels and pins the threads, ``progress_bar(total, stream)`` a callable
    progress display with ``clear()``, ``epoch_printer(progress)`` the
    per-epoch callback and ``report(args, result, summary, title, text)`` the
    plot and the final line.
    """
    dtype = np.dtype(args.dtype)
    quiet = args.quiet or args.json
    data, source = load(args.data, quiet)
    # Images as (N, 1, 28, 28) in the network's dtype, labels as class indices.
    (x_train, t_train), (x_test, t_test) = (
        (x.reshape(-1, 1, 28, 28).astype(dtype, copy=False), np.argmax(t, axis=1) if t.ndim == 2 else t)
        for x, t in data
    )
    with backend(args.backend, args.threads):
        np.random.seed(args.seed)
        net = SimpleConvNet(input_dim=(1, 28, 28), hidden_size=100, output_size=10, weight_init_std=0.01,
                            dtype=dtype)
        steps = int(args.epochs * max(x_train.shape[0] / args.batch, 1))
        progress = progress_bar(steps, sys.stdout) if not quiet else None
        on_epoch = epoch_printer(progress)
        lr = 0.001 if args.lr is None else args.lr
        start = time.perf_counter()
        result = train(net, x_train, t_train, x_test, t_test, epochs=args.epochs, batch_size=args.batch,
                       optimizer=Adam(lr=lr), on_epoch=on_epoch, on_iter=progress)
        total = time.perf_counter() - start
        import bprop

        name = bprop.backend()
    if progress is not None:
        progress.clear()
    ms = 1000 * result["step_time"] / max(result["iters"], 1)
    summary = {
        "net": "convnet", "test_acc": result["test_acc"], "final_loss": result["loss"][-1] if result["loss"] else None,
        "ms_per_iter": ms, "total_s": total, "epochs": args.epochs, "iters": result["iters"], "batch": args.batch,
        "lr": lr, "seed": args.seed, "backend": name, "dtype": dtype.name, "data": source,
        "train_size": int(x_train.shape[0]), "test_size": int(x_test.shape[0]), "records": result["epochs"],
    }
    report(args, result, summary, f"bprop train --net convnet: {source} MNIST, {name}, {dtype.name}",
           f"test accuracy {result['test_acc']:.4f} after {args.epochs} epochs ({result['iters']} iterations); "
           f"{ms:.2f} ms/iteration without accuracy checks ({name}, {dtype.name}, {source} data, "
           f"{total:.1f} s in all)")
