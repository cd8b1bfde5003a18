"""The book's ``Trainer`` (``common/trainer.py``): mini-batch training with per-epoch accuracy."""
import numpy as np

from .optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

__all__ = ["Trainer"]

OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad, "rmsprop": RMSprop,
              "adam": Adam}


class Trainer:
    """Train ``network`` with mini-batches drawn by ``np.random.choice``, printing as the book does.

    Parameters
    ----------
    network : object
        Has ``params``, ``gradient(x, t)``, ``loss(x, t)`` and ``accuracy(x, t)``.
    x_train, t_train, x_test, t_test : ndarray
    epochs, mini_batch_size : int
    optimizer : {'sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam'}
        Case-insensitive.
    optimizer_param : dict
        Keyword arguments of the optimizer.
    evaluate_sample_num_per_epoch : int, optional
        Evaluate the accuracies on this many leading samples only.
    verbose : bool

    Notes
    -----
    An epoch is ``train_size / mini_batch_size`` iterations. The book
    evaluates when ``current_iter % iter_per_epoch == 0``, which for a
    fractional ``iter_per_epoch`` (e.g. 1000 samples in batches of 128)
    holds only at iteration 0, so it reports one epoch; bprop evaluates at
    the first iteration of each epoch, ``current_iter >= current_epoch *
    iter_per_epoch``, the same iterations as the book's wherever
    ``iter_per_epoch`` is whole.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None, verbose=True):
        name = str(optimizer).lower()
        if name not in OPTIMIZERS:
            raise ValueError(f"Trainer: unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if int(mini_batch_size) != mini_batch_size or mini_batch_size < 1:
            raise ValueError(f"Trainer: mini_batch_size must be a positive integer; got {mini_batch_size!r}")
        if x_train.shape[0] == 0 or x_train.shape[0] != t_train.shape[0]:
            raise ValueError(f"Trainer: x_train and t_train must hold the same, nonzero number of samples; "
                             f"got x_train.shape={x_train.shape}, t_train.shape={t_train.shape}")
        self.network = network
        self.verbose = verbose
        self.x_train = x_train
        self.t_train = t_train
        self.x_test = x_test
        self.t_test = t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = OPTIMIZERS[name](**({"lr": 0.01} if optimizer_param is None else optimizer_param))

        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    def train_step(self):
        """One mini-batch: gradient, update, loss; the accuracies at the start of each epoch."""
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]

        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)

        loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.current_iter >= self.current_epoch * self.iter_per_epoch:
            self.current_epoch += 1
            x_train_sample, t_train_sample = self.x_train, self.t_train
            x_test_sample, t_test_sample = self.x_test, self.t_test
            if self.evaluate_sample_num_per_epoch is not None:
                n = self.evaluate_sample_num_per_epoch
                x_train_sample, t_train_sample = self.x_train[:n], self.t_train[:n]
                x_test_sample, t_test_sample = self.x_test[:n], self.t_test[:n]
            train_acc = self.network.accuracy(x_train_sample, t_train_sample)
            test_acc = self.network.accuracy(x_test_sample, t_test_sample)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print("=== epoch:" + str(self.current_epoch) + ", train acc:" + str(train_acc)
                      + ", test acc:" + str(test_acc) + " ===")
        self.current_iter += 1

    def train(self):
        """Run ``max_iter`` steps, then print the final test accuracy."""
        for _ in range(self.max_iter):
            self.train_step()
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
